//! Local archive: Avro object container files, the embedded default sink that needs no
//! broker. A batch is acknowledged once its block is written and fsynced. Files are named
//! `presence-changes-<UTC start>-<first outbox id>.avro`; the file being written ends in
//! `.avro.open` and is renamed when rotated (by size or age) or at shutdown, so readers of
//! `*.avro` only ever see complete files. After a crash the `.open` file is repaired
//! ([`crate::codec::ocf::recover`]) and closed on start.

use super::{PublishFailure, Sink, SinkError};
use crate::codec::ocf::{self, OcfCodec, OcfWriter};
use crate::codec::PRESENCE_CHANGE_AVSC;
use crate::config::{ArchiveCompression, ArchiveConfig};
use crate::state::OutboxEntry;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct ArchiveSink {
    dir: PathBuf,
    config: ArchiveConfig,
    current: Option<OpenFile>,
}

struct OpenFile {
    writer: OcfWriter,
    path: PathBuf,
    opened: Instant,
}

fn io_err(e: impl std::fmt::Display) -> SinkError {
    SinkError::Io {
        sink: "archive".into(),
        reason: e.to_string(),
    }
}

impl ArchiveSink {
    /// Opens the archive directory and repairs/closes files left open by a crash.
    pub fn open(dir: &Path, config: ArchiveConfig) -> Result<ArchiveSink, SinkError> {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        for e in std::fs::read_dir(dir).map_err(io_err)? {
            let path = e.map_err(io_err)?.path();
            if path.to_string_lossy().ends_with(".avro.open") {
                match ocf::recover(&path) {
                    Ok(r) => {
                        if r.truncated_bytes > 0 {
                            tracing::warn!(file = %path.display(), cut = r.truncated_bytes, "archive: cut a torn last block left by a crash (its events are re-written from the outbox)");
                        }
                        close_file(&path).map_err(io_err)?;
                    }
                    Err(e) => {
                        // Not even a header: nothing acknowledged can be in it.
                        tracing::warn!(file = %path.display(), error = %e, "archive: removing an unreadable open file");
                        std::fs::remove_file(&path).map_err(io_err)?;
                    }
                }
            }
        }
        Ok(ArchiveSink {
            dir: dir.to_path_buf(),
            config,
            current: None,
        })
    }

    fn ensure_file(&mut self, first_id: u64) -> Result<&mut OpenFile, SinkError> {
        let rotate = match &self.current {
            None => false,
            Some(f) => {
                f.writer.approx_len() >= self.config.rotate_bytes
                    || f.opened.elapsed() >= self.config.rotate_interval
            }
        };
        if rotate {
            self.rotate()?;
        }
        if self.current.is_none() {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .replace([':', '-'], "");
            let path = self
                .dir
                .join(format!("presence-changes-{stamp}-{first_id:012}.avro.open"));
            let codec = match self.config.compression {
                ArchiveCompression::Deflate => OcfCodec::Deflate,
                ArchiveCompression::None => OcfCodec::Null,
            };
            let writer = OcfWriter::create(&path, PRESENCE_CHANGE_AVSC, codec).map_err(io_err)?;
            tracing::info!(file = %path.display(), "archive: new file");
            self.current = Some(OpenFile {
                writer,
                path,
                opened: Instant::now(),
            });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        if let Some(mut f) = self.current.take() {
            f.writer.flush_block().map_err(io_err)?;
            close_file(&f.path).map_err(io_err)?;
        }
        Ok(())
    }

    /// The directory files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `x.avro.open` → `x.avro`, durably.
fn close_file(open: &Path) -> std::io::Result<()> {
    let s = open.to_string_lossy();
    let closed = PathBuf::from(s.trim_end_matches(".open"));
    std::fs::rename(open, &closed)?;
    if let Some(dir) = closed.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[async_trait]
impl Sink for ArchiveSink {
    fn name(&self) -> &str {
        "archive"
    }

    async fn publish(&mut self, batch: &[OutboxEntry]) -> Result<(), PublishFailure> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let fail = |error| PublishFailure { acked: 0, error };
        let file = self.ensure_file(first.id).map_err(fail)?;
        for e in batch {
            file.writer.append_datum(&e.datum);
        }
        // Compression and fsync are blocking: run them off the async workers.
        let mut file = self.current.take().expect("ensured above");
        let joined = tokio::task::spawn_blocking(move || {
            let r = file.writer.flush_block();
            (file, r)
        })
        .await;
        match joined {
            Ok((file, r)) => {
                self.current = Some(file);
                r.map_err(|e| fail(io_err(e)))
            }
            // The file stays `.open` on disk and is repaired on the next start.
            Err(e) => Err(fail(io_err(e))),
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.rotate()
    }
}

impl Drop for ArchiveSink {
    fn drop(&mut self) {
        let _ = self.rotate();
    }
}
