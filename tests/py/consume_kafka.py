#!/usr/bin/env python3
"""Consumes N Avro messages from a Kafka topic (from the earliest offset) and prints one JSON
line per message: key (utf-8), partition, offset, headers (name -> utf-8 str), value (decoded).

Default framing: Avro single-object encoding (C3 01 + CRC-64-AVRO little-endian fingerprint of
--schema, default schemas/presence_change.avsc). With --confluent-schema-file FILE: Confluent
framing (00 + 4-byte big-endian schema id, also printed as schema_id), decoded with FILE.

Exits 1 on any framing / fingerprint / decoding error, or when fewer than N messages arrived
within --timeout seconds (saying how many did).

usage: consume_kafka.py --bootstrap HOST:PORT --topic T --count N [--timeout 30]
                        [--schema FILE | --confluent-schema-file FILE] [--group G]
"""

import argparse
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException

from avro_framing import Decoder, FramingError, add_framing_args, die, emit, headers_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--group", default=None, help="consumer group (default: a fresh random one)")
    ap.add_argument("--raw", action="store_true", help="do not decode: print the value as hex")
    ap.add_argument(
        "--to-end",
        action="store_true",
        help="after --count messages, go on to the end of every partition (the topic may hold "
        "more copies than were acknowledged, e.g. a broker-side retry during an outage)",
    )
    add_framing_args(ap)
    args = ap.parse_args()

    decoder = None if args.raw else Decoder(args.schema, args.confluent_schema_file)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group or f"pb-verify-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "socket.timeout.ms": 10000,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    consumer.subscribe([args.topic])
    received = 0
    deadline = time.monotonic() + args.timeout
    ends = None  # partition -> high watermark, taken once --count is reached (--to-end)

    def at_end() -> bool:
        nonlocal ends
        if ends is None:
            ends = {}
            for tp in consumer.assignment():
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                ends[tp.partition] = high
        positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}
        return all(positions.get(p, -1) >= high or high == 0 for p, high in ends.items())

    try:
        while received < args.count or (args.to_end and not at_end()):
            left = deadline - time.monotonic()
            if left <= 0:
                what = "the end of every partition" if received >= args.count else f"{args.count} message(s)"
                die(f"timeout after {args.timeout}s waiting for {what}: received {received} from {args.topic}", 1)
            msg = consumer.poll(min(left, 1.0))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                # Topic not created yet, broker restarting, ...: keep polling until the deadline.
                if err.fatal():
                    raise KafkaException(err)
                print(f"warning: {err}", file=sys.stderr)
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            key = msg.key()
            try:
                key_text = None if key is None else key.decode("utf-8")
            except UnicodeDecodeError:
                die(f"{where}: key is not utf-8: {key!r}", 1)
            out = {
                "key": key_text,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "headers": headers_dict(msg.headers()),
            }
            if decoder is None:
                out["value"] = None if msg.value() is None else msg.value().hex()
            else:
                try:
                    out.update(decoder.decode(msg.value()))
                except FramingError as e:
                    die(f"{where}: {e}", 1)
                except Exception as e:  # fastavro decoding errors
                    die(f"{where}: cannot decode Avro datum: {type(e).__name__}: {e}", 1)
            emit(out)
            received += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
