#!/usr/bin/env python3
"""Sends each non-empty line of FILE ('-' = stdin) as one Kafka message value to TOPIC and
waits for every delivery report. Used by the tests to inject commands.

Values are the JSON text as-is, unless --avro-schema FILE is given: then each line is parsed
as JSON and sent in Avro single-object encoding (C3 01 + CRC-64-AVRO LE fingerprint + datum).

usage: produce_kafka.py --bootstrap HOST:PORT --topic T --file F [--key K]
                        [--header name=value ...] [--avro-schema FILE]
"""

import argparse
import json
import sys

from confluent_kafka import Producer

from avro_framing import Schema, die, resolve_schema_path


def read_lines(path: str) -> list[str]:
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--key", default=None, help="key for every message (default: none)")
    ap.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--avro-schema", default=None, help="encode lines as Avro single-object with this schema")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    headers = []
    for h in args.header:
        name, sep, value = h.partition("=")
        if not sep:
            die(f"--header {h!r}: expected NAME=VALUE")
        headers.append((name, value.encode("utf-8")))

    schema = Schema.load(resolve_schema_path(args.avro_schema)) if args.avro_schema else None
    values = []
    for n, line in enumerate(read_lines(args.file), 1):
        if schema is None:
            values.append(line.encode("utf-8"))
        else:
            try:
                values.append(schema.encode_single_object(json.loads(line)))
            except Exception as e:
                die(f"{args.file}:{n}: cannot encode with {schema.origin}: {type(e).__name__}: {e}")

    producer = Producer({"bootstrap.servers": args.bootstrap, "message.timeout.ms": int(args.timeout * 1000)})
    failures = []

    def report(err, msg):
        if err is not None:
            failures.append(str(err))

    for v in values:
        producer.produce(args.topic, value=v, key=args.key, headers=headers or None, on_delivery=report)
        producer.poll(0)
    left = producer.flush(args.timeout)
    if left or failures:
        die(f"{len(failures) + left} of {len(values)} message(s) not delivered to {args.topic}: {failures[:3]}", 1)
    print(f"delivered {len(values)} message(s) to {args.topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
