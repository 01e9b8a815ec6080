#!/usr/bin/env python3
"""Reads N Avro messages from a NATS JetStream stream (from the first message, with an
ephemeral ordered consumer) and prints one JSON line per message: subject, seq (stream
sequence), headers (name -> str), value (decoded record).

Default framing: Avro single-object encoding (C3 01 + CRC-64-AVRO little-endian fingerprint of
--schema, default schemas/presence_change.avsc). With --confluent-schema-file FILE: Confluent
framing (00 + 4-byte big-endian schema id, printed as schema_id), decoded with FILE.

Exits 1 on any framing / fingerprint / decoding error, or when fewer than N messages arrived
within --timeout seconds (saying how many did). The stream may be created after this starts.

usage: consume_nats.py --url nats://HOST:PORT --stream S --subject 'presence.changes.>'
                       --count N [--timeout 30] [--schema FILE | --confluent-schema-file FILE]
"""

import argparse
import asyncio
import sys
import time

import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from avro_framing import Decoder, FramingError, add_framing_args, die, emit, headers_dict


async def run(args) -> None:
    decoder = None if args.raw else Decoder(args.schema, args.confluent_schema_file)
    deadline = time.monotonic() + args.timeout

    def left() -> float:
        return deadline - time.monotonic()

    received = 0

    def timeout_exit() -> None:
        die(
            f"timeout after {args.timeout}s: received {received} of {args.count} message(s) "
            f"from stream {args.stream} subject {args.subject}",
            1,
        )

    nc = await nats.connect(args.url, connect_timeout=max(1, min(5, int(left()))), max_reconnect_attempts=-1)
    try:
        js = nc.jetstream()
        while True:  # the stream may not exist yet
            try:
                await js.stream_info(args.stream)
                break
            except NotFoundError:
                if left() <= 0:
                    timeout_exit()
                await asyncio.sleep(0.1)
        sub = await js.subscribe(
            args.subject,
            stream=args.stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            idle_heartbeat=1.0,
        )
        while received < args.count:
            if left() <= 0:
                timeout_exit()
            try:
                msg = await sub.next_msg(timeout=min(left(), 1.0))
            except nats.errors.TimeoutError:
                continue
            where = f"{msg.subject}"
            out = {"subject": msg.subject, "headers": headers_dict(msg.headers)}
            try:
                out["seq"] = msg.metadata.sequence.stream
                where += f" (stream seq {out['seq']})"
            except Exception:
                pass
            if decoder is None:
                out["value"] = msg.data.hex()
            else:
                try:
                    out.update(decoder.decode(msg.data))
                except FramingError as e:
                    die(f"{where}: {e}", 1)
                except Exception as e:  # fastavro decoding errors
                    die(f"{where}: cannot decode Avro datum: {type(e).__name__}: {e}", 1)
            emit(out)
            received += 1
        await sub.unsubscribe()
    finally:
        await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--stream", required=True)
    ap.add_argument("--subject", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--raw", action="store_true", help="do not decode: print the payload as hex")
    add_framing_args(ap)
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
    except SystemExit:
        raise
    except Exception as e:
        die(f"{type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main())
