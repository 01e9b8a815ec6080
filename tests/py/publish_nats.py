#!/usr/bin/env python3
"""Publishes each non-empty line of FILE ('-' = stdin) as one NATS message to SUBJECT.
Used by the tests to inject commands.

Payloads are the JSON text as-is, unless --avro-schema FILE is given: then each line is parsed
as JSON and sent in Avro single-object encoding (C3 01 + CRC-64-AVRO LE fingerprint + datum).
With --jetstream each publish waits for a JetStream ack (fails if no stream captures SUBJECT);
otherwise core NATS publish + flush.

--ensure-stream NAME first creates stream NAME (file storage) capturing --stream-subjects
(default: SUBJECT) unless it exists.

usage: publish_nats.py --url nats://HOST:PORT --subject S --file F [--jetstream]
                       [--header name=value ...] [--avro-schema FILE]
                       [--ensure-stream NAME [--stream-subjects 'a.>' ...]]
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.js.errors import NotFoundError

from avro_framing import Schema, die, resolve_schema_path


def read_lines(path: str) -> list[str]:
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


async def run(args, payloads, headers) -> None:
    nc = await nats.connect(args.url, connect_timeout=5)
    try:
        if args.ensure_stream:
            js = nc.jetstream(timeout=args.timeout)
            try:
                await js.stream_info(args.ensure_stream)
            except NotFoundError:
                subjects = args.stream_subjects or [args.subject]
                await js.add_stream(name=args.ensure_stream, subjects=subjects)
        if args.jetstream:
            js = nc.jetstream(timeout=args.timeout)
            for p in payloads:
                await js.publish(args.subject, p, headers=headers or None)
        else:
            for p in payloads:
                await nc.publish(args.subject, p, headers=headers or None)
            await nc.flush(timeout=args.timeout)
    finally:
        await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--avro-schema", default=None, help="encode lines as Avro single-object with this schema")
    ap.add_argument("--jetstream", action="store_true", help="wait for a JetStream ack per message")
    ap.add_argument("--ensure-stream", default=None, metavar="NAME", help="create this stream if missing")
    ap.add_argument("--stream-subjects", action="append", default=[], help="subjects of --ensure-stream")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    headers = {}
    for h in args.header:
        name, sep, value = h.partition("=")
        if not sep:
            die(f"--header {h!r}: expected NAME=VALUE")
        headers[name] = value

    schema = Schema.load(resolve_schema_path(args.avro_schema)) if args.avro_schema else None
    payloads = []
    for n, line in enumerate(read_lines(args.file), 1):
        if schema is None:
            payloads.append(line.encode("utf-8"))
        else:
            try:
                payloads.append(schema.encode_single_object(json.loads(line)))
            except Exception as e:
                die(f"{args.file}:{n}: cannot encode with {schema.origin}: {type(e).__name__}: {e}")
    try:
        asyncio.run(run(args, payloads, headers))
    except Exception as e:
        die(f"publish to {args.subject} failed: {type(e).__name__}: {e}", 1)
    print(f"published {len(payloads)} message(s) to {args.subject}", file=sys.stderr)


if __name__ == "__main__":
    main()
