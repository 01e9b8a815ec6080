#!/usr/bin/env python3
"""Reads every *.avro object container file under DIR (sorted by relative path) and prints
each record as one JSON line with an extra "_file" key (path relative to DIR).

Fails (exit 1) when a file's embedded writer schema does not have the same Parsing Canonical
Form fingerprint (CRC-64-AVRO) as the expected schema (default schemas/presence_change.avsc),
or when a file is not a valid Avro object container file.

usage: read_archive.py DIR [--schema FILE] [--min-records N]
"""

import argparse
import os
import sys

from fastavro import reader

from avro_framing import FramingError, Schema, die, emit, resolve_schema_path


def avro_files(root: str) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".avro"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--schema", default=None, help="expected schema (default: schemas/presence_change.avsc)")
    ap.add_argument("--min-records", type=int, default=0, help="fail when fewer records were read")
    args = ap.parse_args()

    if not os.path.isdir(args.dir):
        die(f"{args.dir} is not a directory")
    expected = Schema.load(resolve_schema_path(args.schema))

    total = 0
    files = avro_files(args.dir)
    for rel in files:
        path = os.path.join(args.dir, rel)
        try:
            with open(path, "rb") as f:
                r = reader(f, return_record_name=False)
                text = r.metadata.get("avro.schema")
                if isinstance(text, bytes):
                    text = text.decode("utf-8")
                if not text:
                    raise FramingError("no avro.schema in the file header")
                writer = Schema.from_json_text(text, f"{rel} (embedded)")
                if writer.fingerprint != expected.fingerprint:
                    raise FramingError(
                        f"embedded writer schema fingerprint {writer.fingerprint.hex()} != "
                        f"{expected.fingerprint.hex()} of {expected.origin}\n"
                        f"  embedded: {writer.canonical}\n  expected: {expected.canonical}"
                    )
                for rec in r:
                    out = dict(rec)
                    out["_file"] = rel
                    emit(out)
                    total += 1
        except FramingError as e:
            die(f"{path}: {e}", 1)
        except Exception as e:  # fastavro raises assorted types on corrupt input
            die(f"{path}: not a valid Avro object container file: {type(e).__name__}: {e}", 1)

    print(f"read {total} record(s) from {len(files)} file(s) under {args.dir}", file=sys.stderr)
    if total < args.min_records:
        die(f"expected at least {args.min_records} record(s), read {total}", 1)


if __name__ == "__main__":
    main()
