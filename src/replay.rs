//! Reading history back: the local archive's container files → `PresenceChange`s.
//! Records written with an older or newer schema are resolved to the current one; a corrupt
//! block or record is reported with its file and position and skipped, never a crash.

use crate::codec::{self, ocf};
use crate::model::PresenceChange;
use apache_avro::Schema;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: ocf::OcfError,
    },
    #[error("{path}: writer schema: {reason}")]
    Schema { path: String, reason: String },
    #[error("{path}: block at byte {offset}, record {index}: {reason}")]
    Record {
        path: String,
        offset: u64,
        index: i64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// Archive files in name order (= time order): closed `.avro` and the open `.avro.open`.
pub fn archive_files(dir: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ReplayError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".avro") || s.ends_with(".avro.open")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Calls `each` for every record of every archive file under `dir`, in order. Problems are
/// passed as `Err` and reading goes on with the next block or file.
pub fn read_archive(
    dir: &Path,
    mut each: impl FnMut(Result<PresenceChange, ReplayError>),
) -> Result<(), ReplayError> {
    let reader_schema = &codec::presence_change_schema().schema;
    for path in archive_files(dir)? {
        read_file(&path, reader_schema, &mut each);
    }
    Ok(())
}

fn read_file(
    path: &Path,
    reader_schema: &Schema,
    each: &mut impl FnMut(Result<PresenceChange, ReplayError>),
) {
    let p = path.display().to_string();
    let mut r = match ocf::open(path) {
        Ok(r) => r,
        Err(source) => return each(Err(ReplayError::File { path: p, source })),
    };
    let writer = match Schema::parse_str(&r.header.schema_json) {
        Ok(s) => s,
        Err(e) => {
            return each(Err(ReplayError::Schema {
                path: p,
                reason: e.to_string(),
            }))
        }
    };
    loop {
        match r.next_block() {
            Ok(None) => break,
            Err(source) => {
                each(Err(ReplayError::File {
                    path: p.clone(),
                    source,
                }));
                break;
            }
            Ok(Some(block)) => {
                let mut data: &[u8] = &block.data;
                for index in 0..block.count {
                    let v = apache_avro::from_avro_datum(&writer, &mut data, Some(reader_schema))
                        .map_err(|e| e.to_string())
                        .and_then(|v| {
                            apache_avro::from_value::<PresenceChange>(&v).map_err(|e| e.to_string())
                        });
                    match v {
                        Ok(c) => each(Ok(c)),
                        Err(reason) => {
                            // The rest of this block cannot be framed any more.
                            each(Err(ReplayError::Record {
                                path: p.clone(),
                                offset: block.offset,
                                index,
                                reason,
                            }));
                            break;
                        }
                    }
                }
            }
        }
    }
}
