"""Shared helpers for the independent Python verifiers in tests/py/.

Wire framings checked here (independently of the Rust code):

* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO (Rabin)
  fingerprint of the schema's Parsing Canonical Form + Avro binary datum.
* Confluent wire format: ``00`` + 4-byte big-endian schema id + Avro binary datum.

Decoded records are made JSON-safe: timestamp/time/date logical types are read as their
underlying integers (timestamp-millis -> integer millis since the epoch), bytes become hex.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import decimal
import io
import json
import os
import sys
import uuid
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_SCHEMA = os.path.join(REPO_ROOT, "schemas", "presence_change.avsc")

# Logical types read as their underlying primitive, so values are exact integers.
_INT_LOGICAL = {
    "timestamp-millis",
    "timestamp-micros",
    "timestamp-nanos",
    "local-timestamp-millis",
    "local-timestamp-micros",
    "local-timestamp-nanos",
    "time-millis",
    "time-micros",
    "date",
}


class FramingError(Exception):
    """A message or file does not carry the expected framing / schema."""


def die(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


# --- CRC-64-AVRO (Rabin), as in the Avro specification -------------------------------------

_EMPTY = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


def fingerprint_le(canonical: str) -> bytes:
    """The 8 fingerprint bytes as they appear in a single-object header (little-endian)."""
    return crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


# --- schemas ---------------------------------------------------------------------------------


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strip_logical(v) for k, v in node.items()}
        if out.get("logicalType") in _INT_LOGICAL:
            del out["logicalType"]
        return out
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


class Schema:
    """A schema file: parsed form, canonical form, fingerprint, and a plain-int reader."""

    def __init__(self, raw: Any, origin: str):
        self.origin = origin
        self.raw = raw
        # Writer schema (with logical types) for canonical form and encoding.
        self.parsed = parse_schema(copy.deepcopy(raw), _write_hint=False, _force=True)
        self.canonical = to_parsing_canonical_form(self.parsed)
        self.fingerprint = fingerprint_le(self.canonical)
        # Same schema without int-backed logical types: the reader side of decoding.
        self.reader = parse_schema(_strip_logical(copy.deepcopy(raw)), _write_hint=False, _force=True)

    @classmethod
    def load(cls, path: str) -> "Schema":
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            die(f"cannot read schema {path}: {e}")
        return cls(raw, path)

    @classmethod
    def from_json_text(cls, text: str, origin: str) -> "Schema":
        return cls(json.loads(text), origin)

    def decode_datum(self, datum: bytes) -> Any:
        buf = io.BytesIO(datum)
        # Logical types do not change the binary encoding (the canonical form drops them).
        rec = schemaless_reader(buf, self.reader, None, return_record_name=False)
        rest = len(datum) - buf.tell()
        if rest:
            raise FramingError(f"{rest} trailing byte(s) after the Avro datum")
        return rec

    def encode_single_object(self, record: Any) -> bytes:
        buf = io.BytesIO()
        buf.write(SINGLE_OBJECT_MAGIC)
        buf.write(self.fingerprint)
        schemaless_writer(buf, self.parsed, record)
        return buf.getvalue()


def resolve_schema_path(path: str | None) -> str:
    if not path:
        return DEFAULT_SCHEMA
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(REPO_ROOT, path)


# --- framing ---------------------------------------------------------------------------------


def decode_single_object(data: bytes | None, schema: Schema) -> Any:
    if data is None:
        raise FramingError("message has no value (tombstone)")
    if len(data) < 10:
        raise FramingError(f"message too short for single-object encoding: {len(data)} bytes")
    if data[:2] != SINGLE_OBJECT_MAGIC:
        raise FramingError(f"bad single-object magic {data[:2].hex()} (want c301)")
    fp = data[2:10]
    if fp != schema.fingerprint:
        raise FramingError(
            f"schema fingerprint mismatch: message {fp.hex()} "
            f"!= {schema.fingerprint.hex()} (CRC-64-AVRO LE of {schema.origin})"
        )
    return schema.decode_datum(data[10:])


def decode_confluent(data: bytes | None, schema: Schema) -> tuple[int, Any]:
    if data is None:
        raise FramingError("message has no value (tombstone)")
    if len(data) < 5:
        raise FramingError(f"message too short for Confluent framing: {len(data)} bytes")
    if data[:1] != CONFLUENT_MAGIC:
        raise FramingError(f"bad Confluent magic {data[:1].hex()} (want 00)")
    schema_id = int.from_bytes(data[1:5], "big")
    return schema_id, schema.decode_datum(data[5:])


class Decoder:
    """Decodes message values in the framing selected on the command line."""

    def __init__(self, schema_path: str | None, confluent_schema_file: str | None):
        self.confluent = confluent_schema_file is not None
        path = resolve_schema_path(confluent_schema_file if self.confluent else schema_path)
        self.schema = Schema.load(path)

    def decode(self, data: bytes | None) -> dict:
        """Returns extra output fields: {"value": record[, "schema_id": id]}."""
        if self.confluent:
            schema_id, rec = decode_confluent(data, self.schema)
            return {"schema_id": schema_id, "value": rec}
        return {"value": decode_single_object(data, self.schema)}


def add_framing_args(parser) -> None:
    parser.add_argument(
        "--schema",
        default=None,
        help="schema of single-object messages (default: schemas/presence_change.avsc)",
    )
    parser.add_argument(
        "--confluent-schema-file",
        default=None,
        help="expect Confluent framing (0x00 + schema id) and decode with this schema",
    )


# --- JSON output -----------------------------------------------------------------------------

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return (v - _EPOCH) // _dt.timedelta(milliseconds=1)
    if isinstance(v, _dt.date):
        return (v - _dt.date(1970, 1, 1)).days
    if isinstance(v, _dt.time):
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(json_safe(obj), sort_keys=True, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def headers_dict(headers) -> dict:
    """Kafka/NATS headers -> {name: utf-8 str} (last value wins; invalid utf-8 as hex)."""
    out: dict[str, str] = {}
    if not headers:
        return out
    items = headers.items() if hasattr(headers, "items") else headers
    for k, v in items:
        if isinstance(v, list):
            v = v[-1] if v else ""
        if v is None:
            out[k] = None
            continue
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                v = "hex:" + bytes(v).hex()
        out[k] = v
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
