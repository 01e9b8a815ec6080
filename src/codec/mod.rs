//! Avro encoding of the bridge's records and the framings they travel in.
//!
//! - **datum**: plain Avro binary, written straight from serde ([`avro_ser`]). The outbox
//!   stores datums, so the framing can differ per sink and change without a migration.
//! - **single-object** (default on brokers): `C3 01` + CRC-64-AVRO fingerprint (LE) + datum.
//! - **Confluent wire format** (with a schema registry): `00` + schema id (BE u32) + datum.
//! - **object container files** ([`ocf`]) for the local archive.

pub mod avro_ser;
pub mod ocf;
pub mod registry;

use crate::model::{Command, CommandResult, PresenceChange, PresenceState};
use apache_avro::Schema;
use std::sync::OnceLock;

pub const PRESENCE_CHANGE_AVSC: &str = include_str!("../../schemas/presence_change.avsc");
pub const PRESENCE_STATE_AVSC: &str = include_str!("../../schemas/presence_state.avsc");
pub const PRESENCE_COMMAND_AVSC: &str = include_str!("../../schemas/presence_command.avsc");
pub const COMMAND_RESULT_AVSC: &str = include_str!("../../schemas/command_result.avsc");

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Encode(#[from] avro_ser::AvroSerError),
    #[error("avro decode: {0}")]
    Decode(String),
    #[error("message framing: {0}")]
    Framing(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// One of the bridge's schemas, parsed once, with what framing needs.
pub struct SchemaInfo {
    pub name: &'static str,
    pub json: &'static str,
    pub schema: Schema,
    pub canonical: String,
    /// CRC-64-AVRO (Rabin) fingerprint of the parsing canonical form.
    pub fingerprint: u64,
}

impl SchemaInfo {
    fn load(name: &'static str, json: &'static str) -> SchemaInfo {
        // The schemas are compiled in and covered by tests, so failing here is a build bug.
        let schema = Schema::parse_str(json).unwrap_or_else(|e| panic!("schema {name}: {e}"));
        let value: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("schema {name}: {e}"));
        let canonical = parsing_canonical_form(&value);
        let fingerprint = rabin_fingerprint(canonical.as_bytes());
        SchemaInfo {
            name,
            json,
            schema,
            canonical,
            fingerprint,
        }
    }

    /// The 10-byte single-object header for this schema.
    pub fn single_object_header(&self) -> [u8; 10] {
        let mut h = [0u8; 10];
        h[0] = 0xC3;
        h[1] = 0x01;
        h[2..].copy_from_slice(&self.fingerprint.to_le_bytes());
        h
    }

    /// Fingerprint as 16 lower-case hex digits of its little-endian bytes (as on the wire).
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

pub fn presence_change_schema() -> &'static SchemaInfo {
    static S: OnceLock<SchemaInfo> = OnceLock::new();
    S.get_or_init(|| SchemaInfo::load("presence_change", PRESENCE_CHANGE_AVSC))
}
pub fn presence_state_schema() -> &'static SchemaInfo {
    static S: OnceLock<SchemaInfo> = OnceLock::new();
    S.get_or_init(|| SchemaInfo::load("presence_state", PRESENCE_STATE_AVSC))
}
pub fn command_schema() -> &'static SchemaInfo {
    static S: OnceLock<SchemaInfo> = OnceLock::new();
    S.get_or_init(|| SchemaInfo::load("presence_command", PRESENCE_COMMAND_AVSC))
}
pub fn command_result_schema() -> &'static SchemaInfo {
    static S: OnceLock<SchemaInfo> = OnceLock::new();
    S.get_or_init(|| SchemaInfo::load("command_result", COMMAND_RESULT_AVSC))
}

/// All schemas, for `presence-bridge schemas` and the registry.
pub fn all_schemas() -> [&'static SchemaInfo; 4] {
    [
        presence_change_schema(),
        presence_state_schema(),
        command_schema(),
        command_result_schema(),
    ]
}

/// The Avro specification's Parsing Canonical Form, which the fingerprint is taken of.
///
/// Ours, not `apache_avro`'s `canonical_form()`: that one writes a logical type's base as
/// `{"type":"long"}` instead of `"long"`, so its fingerprints differ from what Java,
/// fastavro and every other implementation compute, and their readers would reject our
/// single-object messages.
pub fn parsing_canonical_form(schema: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut defined = std::collections::HashSet::new();
    pcf(schema, None, &mut defined, &mut out);
    out
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn full_name(name: &str, ns: Option<&str>) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        match ns {
            Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        }
    }
}

fn pcf(
    v: &serde_json::Value,
    ns: Option<&str>,
    defined: &mut std::collections::HashSet<String>,
    out: &mut String,
) {
    use serde_json::Value as J;
    let q = |s: &str| serde_json::to_string(s).expect("string");
    match v {
        J::String(s) => {
            if PRIMITIVES.contains(&s.as_str()) {
                out.push_str(&q(s));
            } else {
                out.push_str(&q(&full_name(s, ns)));
            }
        }
        J::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(b, ns, defined, out);
            }
            out.push(']');
        }
        J::Object(o) => {
            let ty = o.get("type").and_then(|t| t.as_str()).unwrap_or("");
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let name = o.get("name").and_then(|n| n.as_str()).unwrap_or("");
                    let own_ns = o.get("namespace").and_then(|n| n.as_str()).or(ns);
                    let fname = full_name(name, own_ns);
                    if !defined.insert(fname.clone()) {
                        out.push_str(&q(&fname));
                        return;
                    }
                    // Names inside a named type resolve against its namespace.
                    let inner_ns = fname.rsplit_once('.').map(|(n, _)| n.to_string());
                    out.push_str(&format!("{{\"name\":{},\"type\":{}", q(&fname), q(ty)));
                    if let Some(fields) = o.get("fields").and_then(|f| f.as_array()) {
                        out.push_str(",\"fields\":[");
                        for (i, f) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let fname = f.get("name").and_then(|n| n.as_str()).unwrap_or("");
                            out.push_str(&format!("{{\"name\":{},\"type\":", q(fname)));
                            pcf(&f["type"], inner_ns.as_deref(), defined, out);
                            out.push('}');
                        }
                        out.push(']');
                    }
                    if let Some(symbols) = o.get("symbols") {
                        out.push_str(",\"symbols\":");
                        out.push_str(&symbols.to_string());
                    }
                    if let Some(size) = o.get("size") {
                        out.push_str(",\"size\":");
                        out.push_str(&size.to_string());
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    pcf(&o["items"], ns, defined, out);
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    pcf(&o["values"], ns, defined, out);
                    out.push('}');
                }
                // A primitive, possibly with a logical type: its simple name.
                _ => pcf(&o["type"], ns, defined, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

const RABIN_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

fn rabin_table() -> &'static [u64; 256] {
    static T: OnceLock<[u64; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (RABIN_EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    })
}

/// CRC-64-AVRO, the fingerprint of the Avro specification (single-object encoding).
pub fn rabin_fingerprint(data: &[u8]) -> u64 {
    let t = rabin_table();
    let mut fp = RABIN_EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ t[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

/// How datums are framed on a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding (self-describing by fingerprint).
    SingleObject { fingerprint: u64 },
    /// Confluent wire format with a registry-assigned schema id.
    Confluent { schema_id: u32 },
}

impl Framing {
    pub fn header_len(&self) -> usize {
        match self {
            Framing::SingleObject { .. } => 10,
            Framing::Confluent { .. } => 5,
        }
    }

    /// Writes the framing header then the datum into a fresh buffer.
    pub fn frame(&self, datum: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len() + datum.len());
        match *self {
            Framing::SingleObject { fingerprint } => {
                out.extend_from_slice(&[0xC3, 0x01]);
                out.extend_from_slice(&fingerprint.to_le_bytes());
            }
            Framing::Confluent { schema_id } => {
                out.push(0);
                out.extend_from_slice(&schema_id.to_be_bytes());
            }
        }
        out.extend_from_slice(datum);
        out
    }
}

/// A framed payload split into its parts, without trusting it.
#[derive(Debug, PartialEq, Eq)]
pub enum Unframed<'a> {
    SingleObject {
        fingerprint: u64,
        datum: &'a [u8],
    },
    Confluent {
        schema_id: u32,
        datum: &'a [u8],
    },
    /// Not Avro framing: the caller may try JSON.
    Other(&'a [u8]),
}

pub fn unframe(bytes: &[u8]) -> Unframed<'_> {
    if bytes.len() >= 10 && bytes[0] == 0xC3 && bytes[1] == 0x01 {
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..10]);
        Unframed::SingleObject {
            fingerprint: u64::from_le_bytes(fp),
            datum: &bytes[10..],
        }
    } else if bytes.len() >= 5 && bytes[0] == 0 {
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes[1..5]);
        Unframed::Confluent {
            schema_id: u32::from_be_bytes(id),
            datum: &bytes[5..],
        }
    } else {
        Unframed::Other(bytes)
    }
}

/// Encodes a change as a bare Avro datum.
pub fn encode_change(change: &PresenceChange, out: &mut Vec<u8>) -> Result<(), CodecError> {
    avro_ser::write_datum(out, change)?;
    Ok(())
}

/// Encodes a change built from borrowed parts (the pipeline's hot path).
pub fn encode_change_ref(
    change: &crate::model::PresenceChangeRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    avro_ser::write_datum(out, change)?;
    Ok(())
}

pub fn decode_state(datum: &[u8]) -> Result<PresenceState, CodecError> {
    let s = &presence_state_schema().schema;
    decode_datum(s, s, datum)
}

pub fn encode_state(state: &PresenceState, out: &mut Vec<u8>) -> Result<(), CodecError> {
    avro_ser::write_datum(out, state)?;
    Ok(())
}

pub fn encode_command(cmd: &Command, out: &mut Vec<u8>) -> Result<(), CodecError> {
    avro_ser::write_datum(out, cmd)?;
    Ok(())
}

pub fn encode_result(res: &CommandResult, out: &mut Vec<u8>) -> Result<(), CodecError> {
    avro_ser::write_datum(out, res)?;
    Ok(())
}

/// Decodes a datum written with `writer` into `T`, resolving to the current schema when
/// the writer schema is an older or newer version.
pub fn decode_datum<T: serde::de::DeserializeOwned>(
    writer: &Schema,
    reader: &Schema,
    mut datum: &[u8],
) -> Result<T, CodecError> {
    let value = apache_avro::from_avro_datum(writer, &mut datum, Some(reader))
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    apache_avro::from_value::<T>(&value).map_err(|e| CodecError::Decode(e.to_string()))
}

pub fn decode_change(datum: &[u8]) -> Result<PresenceChange, CodecError> {
    let s = &presence_change_schema().schema;
    decode_datum(s, s, datum)
}

/// Decodes a command from the command topic: single-object Avro, Confluent-framed Avro
/// (any registry id: the datum is read with the bridge's command schema), or JSON.
pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    let schema = command_schema();
    match unframe(bytes) {
        Unframed::SingleObject { fingerprint, datum } => {
            if fingerprint != schema.fingerprint {
                return Err(CodecError::Framing(format!(
                    "single-object fingerprint {:016x} is not the presence_command schema ({:016x})",
                    fingerprint, schema.fingerprint
                )));
            }
            decode_datum(&schema.schema, &schema.schema, datum)
        }
        Unframed::Confluent { datum, .. } => decode_datum(&schema.schema, &schema.schema, datum),
        Unframed::Other(b) => Ok(serde_json::from_slice(b)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabin_matches_known_values() {
        // Reference values: fastavro.schema.fingerprint(canonical, "CRC-64-AVRO") prints the
        // little-endian bytes 8f5c393f1ad57572 for `"int"` and c70345637248018f for `"string"`.
        assert_eq!(rabin_fingerprint(br#""int""#), 0x7275_d51a_3f39_5c8f);
        assert_eq!(rabin_fingerprint(br#""string""#), 0x8f01_4872_6345_03c7);
        assert_eq!(rabin_fingerprint(b""), RABIN_EMPTY);
    }

    #[test]
    fn framing_round_trips() {
        let so = Framing::SingleObject {
            fingerprint: 0x0102_0304_0506_0708,
        };
        let framed = so.frame(b"xyz");
        assert_eq!(&framed[..2], &[0xC3, 0x01]);
        assert_eq!(
            unframe(&framed),
            Unframed::SingleObject {
                fingerprint: 0x0102_0304_0506_0708,
                datum: b"xyz"
            }
        );
        let c = Framing::Confluent { schema_id: 42 };
        assert_eq!(
            unframe(&c.frame(b"q")),
            Unframed::Confluent {
                schema_id: 42,
                datum: b"q"
            }
        );
        assert_eq!(unframe(b"{}"), Unframed::Other(b"{}"));
    }
}
