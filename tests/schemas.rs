//! The committed schemas are the contract with every consumer. These tests prove that
//! (1) the serde-direct encoder writes exactly what an Avro library writes from the `.avsc`,
//! (2) each schema can read data written with its previous committed version (backward
//! compatible), and (3) every optional field and enum can evolve (defaults everywhere).

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use presence_bridge::codec::{self, avro_ser};
use presence_bridge::model::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn full_state() -> PresenceState {
    let mut raw = BTreeMap::new();
    raw.insert("availability".to_string(), "IdleBusy".to_string());
    raw.insert("activity".to_string(), "InACall".to_string());
    PresenceState {
        availability: Availability::BusyIdle,
        activity: Some(Activity::InACall),
        note: Some("Back at 3 — ünïcødé".into()),
        device: Some("desk phone".into()),
        last_active: Some(1_700_000_000_123),
        out_of_office: Some(false),
        raw,
    }
}

fn sample_changes() -> Vec<PresenceChange> {
    let source = SourceRef {
        kind: "pws".into(),
        connector: "pws-main".into(),
        server: Some("imp1.example.com".into()),
        server_time: Some(1_700_000_000_000),
    };
    vec![
        PresenceChange {
            event_id: event_id("pws-main", "alice@example.com", 1),
            op: ChangeOp::Snapshot,
            resync: true,
            source: source.clone(),
            user: "alice@example.com".into(),
            sequence: 1,
            observed_at: 1_700_000_000_500,
            previous: None,
            current: PresenceState::new(Availability::Available),
        },
        PresenceChange {
            event_id: event_id("pws-main", "alice@example.com", 2),
            op: ChangeOp::Change,
            resync: false,
            source: SourceRef {
                server: None,
                server_time: None,
                ..source
            },
            user: "alice@example.com".into(),
            sequence: 2,
            observed_at: -5,
            previous: Some(PresenceState::new(Availability::Available)),
            current: full_state(),
        },
    ]
}

/// Our bytes == apache_avro's bytes for the same value (up to map entry order), and
/// apache_avro decodes ours back to the same value.
fn check_same_encoding<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    schema: &Schema,
    value: &T,
) {
    let mut ours = Vec::new();
    avro_ser::write_datum(&mut ours, value).unwrap();
    let v = apache_avro::to_value(value)
        .unwrap()
        .resolve(schema)
        .unwrap_or_else(|e| panic!("resolve {value:?}: {e}"));
    let theirs = apache_avro::to_avro_datum(schema, v).unwrap();
    if ours != theirs {
        // apache_avro writes maps in HashMap order, we in key order: both are valid Avro,
        // so the bytes may differ only by map entry order (same length, same decoding).
        assert_eq!(ours.len(), theirs.len(), "encoding differs for {value:?}");
        let theirs_back: T = codec::decode_datum(schema, schema, &theirs).unwrap();
        assert_eq!(&theirs_back, value);
    }
    let back: T = codec::decode_datum(schema, schema, &ours).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn encoder_matches_apache_avro_for_every_record_type() {
    let change = &codec::presence_change_schema().schema;
    for c in sample_changes() {
        check_same_encoding(change, &c);
    }
    check_same_encoding(&codec::presence_state_schema().schema, &full_state());
    for a in Availability::ALL {
        check_same_encoding(
            &codec::presence_state_schema().schema,
            &PresenceState::new(a),
        );
    }
    for act in Activity::ALL {
        check_same_encoding(
            &codec::presence_state_schema().schema,
            &PresenceState::new(Availability::Busy).with_activity(act),
        );
    }
    let cmd = Command {
        command_id: "c-1".into(),
        action: CommandAction::ClearPresence,
        user: "bob@example.com".into(),
        source: Some("graph".into()),
        availability: Some(Availability::DoNotDisturb),
        activity: Some(Activity::Presenting),
        note: Some("n".into()),
        expiry_seconds: Some(3600),
        issued_at: Some(1),
    };
    check_same_encoding(&codec::command_schema().schema, &cmd);
    for status in [
        CommandStatus::Applied,
        CommandStatus::Rejected,
        CommandStatus::Failed,
        CommandStatus::Unsupported,
        CommandStatus::Unknown,
    ] {
        check_same_encoding(
            &codec::command_result_schema().schema,
            &CommandResult {
                command_id: "c".into(),
                user: "u".into(),
                connector: None,
                status,
                error: Some("e".into()),
                duplicate: true,
                completed_at: 9,
            },
        );
    }
}

#[test]
fn rust_enum_order_is_the_schema_symbol_order() {
    let state: serde_json::Value = serde_json::from_str(codec::PRESENCE_STATE_AVSC).unwrap();
    let symbols = |field: usize| -> Vec<String> {
        let t = &state["fields"][field]["type"];
        let e = if t.is_array() { &t[1] } else { t };
        e["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let avail: Vec<String> = Availability::ALL
        .iter()
        .map(|a| a.as_str().into())
        .collect();
    assert_eq!(symbols(0), avail);
    let act: Vec<String> = Activity::ALL.iter().map(|a| a.as_str().into()).collect();
    assert_eq!(symbols(1), act);
}

/// Walks a schema JSON: every union is `["null", …]` with a `null` default on its field,
/// every enum names a default symbol it contains.
fn check_evolvable(v: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) == Some("enum") {
                let syms: Vec<&str> = o["symbols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s.as_str())
                    .collect();
                match o.get("default").and_then(|d| d.as_str()) {
                    Some(d) if syms.contains(&d) => {}
                    _ => problems.push(format!("{path}: enum without a valid default symbol")),
                }
            }
            if let Some(fields) = o.get("fields").and_then(|f| f.as_array()) {
                for f in fields {
                    let name = f["name"].as_str().unwrap_or("?");
                    let p = format!("{path}.{name}");
                    if let Some(u) = f["type"].as_array() {
                        if u.first().and_then(|x| x.as_str()) != Some("null") {
                            problems.push(format!("{p}: union must start with null"));
                        }
                        if f.get("default") != Some(&serde_json::Value::Null) {
                            problems.push(format!("{p}: optional field without default null"));
                        }
                    }
                    check_evolvable(&f["type"], &p, problems);
                }
            }
            for (k, x) in o {
                if k != "fields" {
                    check_evolvable(x, path, problems);
                }
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                check_evolvable(x, path, problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_optional_field_and_enum_has_a_default() {
    for s in codec::all_schemas() {
        let v: serde_json::Value = serde_json::from_str(s.json).unwrap();
        let mut problems = Vec::new();
        check_evolvable(&v, s.name, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn state_record_is_the_same_in_both_schemas() {
    let change: serde_json::Value = serde_json::from_str(codec::PRESENCE_CHANGE_AVSC).unwrap();
    let state: serde_json::Value = serde_json::from_str(codec::PRESENCE_STATE_AVSC).unwrap();
    let mut in_change = change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "previous")
        .unwrap()["type"][1]
        .clone();
    let mut standalone = state.clone();
    in_change.as_object_mut().unwrap().remove("doc");
    standalone.as_object_mut().unwrap().remove("doc");
    assert_eq!(in_change, standalone);
}

/// Each current schema must read data written with every committed earlier version in
/// `schemas/compat/<name>.v<N>.avsc`. When a schema changes, the old file stays and the
/// new version is added beside it.
#[test]
fn current_schemas_read_every_committed_earlier_version() {
    let compat = schema_dir().join("compat");
    let mut checked = 0;
    for s in codec::all_schemas() {
        for e in std::fs::read_dir(&compat).unwrap() {
            let path = e.unwrap().path();
            let fname = path.file_name().unwrap().to_string_lossy().to_string();
            if !fname.starts_with(&format!("{}.v", s.name)) {
                continue;
            }
            let old = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if let Err(err) = SchemaCompatibility::can_read(&old, &s.schema) {
                panic!(
                    "schemas/{}.avsc cannot read data written with {fname}: {err}. \
                     Add new fields with defaults instead of changing or removing fields.",
                    s.name
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected a committed earlier version of each schema"
    );
}

/// The check above can fail: a field added without a default breaks old data.
#[test]
fn an_incompatible_change_is_detected() {
    let old = &codec::presence_change_schema().schema;
    let mut v: serde_json::Value = serde_json::from_str(codec::PRESENCE_CHANGE_AVSC).unwrap();
    v["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tenant", "type": "string"}));
    let new = Schema::parse_str(&v.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(old, &new).is_err());
    // ...and with a default it is fine.
    let last = v["fields"].as_array_mut().unwrap().last_mut().unwrap();
    last["type"] = serde_json::json!(["null", "string"]);
    last["default"] = serde_json::Value::Null;
    let new = Schema::parse_str(&v.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(old, &new).is_ok());
}

#[test]
fn hostile_command_bytes_are_errors_not_panics() {
    let mut seeds: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xC3, 0x01],
        vec![0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![
            0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        b"{".to_vec(),
        b"{\"command_id\": 5}".to_vec(),
        b"{\"command_id\":\"x\",\"user\":\"u\",\"availability\":\"SLEEPY\"}".to_vec(),
        b"{\"command_id\":\"x\",\"user\":\"u\",\"extra\":1}".to_vec(),
    ];
    // A valid single-object command with its datum cut at every length.
    let mut datum = Vec::new();
    codec::encode_command(
        &Command {
            command_id: "c".into(),
            action: CommandAction::SetPresence,
            user: "u@x".into(),
            source: None,
            availability: Some(Availability::Busy),
            activity: None,
            note: Some("hello".into()),
            expiry_seconds: None,
            issued_at: None,
        },
        &mut datum,
    )
    .unwrap();
    let full = presence_bridge::codec::Framing::SingleObject {
        fingerprint: codec::command_schema().fingerprint,
    }
    .frame(&datum);
    assert!(codec::decode_command(&full).is_ok());
    for n in 0..full.len() {
        seeds.push(full[..n].to_vec());
    }
    for s in seeds {
        let _ = codec::decode_command(&s); // must return, not panic
    }
    assert!(codec::decode_command(b"{\"command_id\":\"x\",\"user\":\"u\",\"extra\":1}").is_err());
}

/// Our fingerprints equal fastavro's (an independent implementation of the spec's
/// canonical form and CRC-64-AVRO): otherwise other readers reject our single-object data.
#[test]
fn fingerprints_match_fastavro() {
    mod_support_python::check();
}

mod mod_support_python {
    use presence_bridge::codec;
    pub fn check() {
        let script = r#"
import json, sys
from fastavro.schema import to_parsing_canonical_form, fingerprint
for path in sys.argv[1:]:
    s = json.load(open(path))
    print(fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO"))
"#;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let schemas = codec::all_schemas();
        let paths: Vec<String> = schemas
            .iter()
            .map(|s| dir.join(format!("{}.avsc", s.name)).display().to_string())
            .collect();
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let out = std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .args(&paths)
            .output()
            .expect("python3 with fastavro (installed by .ci/run)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let ours: Vec<String> = schemas.iter().map(|s| s.fingerprint_hex()).collect();
        assert_eq!(ours, theirs);
    }
}
