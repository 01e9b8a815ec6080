//! Avro object container files: the archive sink's format.
//!
//! Written by hand rather than with `apache_avro::Writer` because the archive needs control
//! over exactly when a block is on disk: a block is compressed, written and `fsync`ed, and
//! only then are its records acknowledged to the outbox. After a crash, [`recover`] cuts a
//! half-written last block so the file is valid again (its records are still in the outbox
//! and are written again, with the same event ids).

use super::avro_ser::{write_bytes, write_long};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const MAGIC: &[u8; 4] = b"Obj\x01";
/// Upper bound for one decompressed block when reading, so a hostile file cannot make the
/// reader allocate without bound.
pub const MAX_BLOCK_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcfCodec {
    Null,
    Deflate,
}

impl OcfCodec {
    fn name(self) -> &'static str {
        match self {
            OcfCodec::Null => "null",
            OcfCodec::Deflate => "deflate",
        }
    }
}

pub struct OcfWriter {
    file: File,
    sync: [u8; 16],
    codec: OcfCodec,
    block: Vec<u8>,
    block_count: i64,
    /// Bytes of the file known to be on disk (header + complete blocks).
    written: u64,
}

impl OcfWriter {
    /// Creates a new file (fails if it exists) and writes the header durably.
    pub fn create(path: &Path, schema_json: &str, codec: OcfCodec) -> io::Result<OcfWriter> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut sync = [0u8; 16];
        for chunk in sync.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        let mut header = Vec::with_capacity(schema_json.len() + 64);
        header.extend_from_slice(MAGIC);
        write_long(&mut header, 2);
        write_bytes(&mut header, b"avro.schema");
        write_bytes(&mut header, schema_json.as_bytes());
        write_bytes(&mut header, b"avro.codec");
        write_bytes(&mut header, codec.name().as_bytes());
        write_long(&mut header, 0);
        header.extend_from_slice(&sync);
        file.write_all(&header)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            // Make the new directory entry durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(OcfWriter {
            file,
            sync,
            codec,
            block: Vec::with_capacity(64 * 1024),
            block_count: 0,
            written: header.len() as u64,
        })
    }

    /// Adds one encoded datum to the current block (in memory until [`Self::flush_block`]).
    pub fn append_datum(&mut self, datum: &[u8]) {
        self.block.extend_from_slice(datum);
        self.block_count += 1;
    }

    pub fn pending_records(&self) -> i64 {
        self.block_count
    }

    /// Bytes on disk plus the uncompressed size of the pending block.
    pub fn approx_len(&self) -> u64 {
        self.written + self.block.len() as u64
    }

    /// Writes the pending block and `fsync`s. When this returns `Ok`, every appended record
    /// is durable.
    pub fn flush_block(&mut self) -> io::Result<()> {
        if self.block_count == 0 {
            return Ok(());
        }
        let data = match self.codec {
            OcfCodec::Null => std::mem::take(&mut self.block),
            OcfCodec::Deflate => miniz_oxide::deflate::compress_to_vec(&self.block, 3),
        };
        let mut out = Vec::with_capacity(data.len() + 40);
        write_long(&mut out, self.block_count);
        write_long(&mut out, data.len() as i64);
        out.extend_from_slice(&data);
        out.extend_from_slice(&self.sync);
        self.file.write_all(&out)?;
        self.file.sync_data()?;
        self.written += out.len() as u64;
        self.block.clear();
        self.block_count = 0;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OcfError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("not an Avro object container file (bad magic)")]
    BadMagic,
    #[error("corrupt container header: {0}")]
    Header(String),
    #[error("corrupt block at byte {offset}: {reason}")]
    Block { offset: u64, reason: String },
}

/// Parsed header of a container file.
#[derive(Debug, Clone)]
pub struct OcfHeader {
    pub schema_json: String,
    pub codec: OcfCodec,
    pub sync: [u8; 16],
    pub len: u64,
}

fn read_long<R: Read>(r: &mut R) -> io::Result<i64> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        if shift >= 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "varint too long",
            ));
        }
        n |= ((b[0] & 0x7f) as u64) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
}

fn read_len<R: Read>(r: &mut R, limit: usize) -> io::Result<usize> {
    let n = read_long(r)?;
    if n < 0 || n as u64 > limit as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("length {n} out of range"),
        ));
    }
    Ok(n as usize)
}

fn read_vec<R: Read>(r: &mut R, limit: usize) -> io::Result<Vec<u8>> {
    let n = read_len(r, limit)?;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Counts how many bytes a reader consumed.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_header<R: Read>(r: &mut Counting<R>) -> Result<OcfHeader, OcfError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|_| OcfError::BadMagic)?;
    if &magic != MAGIC {
        return Err(OcfError::BadMagic);
    }
    let herr = |e: io::Error| OcfError::Header(e.to_string());
    let mut schema = None;
    let mut codec = OcfCodec::Null;
    loop {
        let mut count = read_long(r).map_err(herr)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = -count;
            let _size = read_long(r).map_err(herr)?;
        }
        if count > 1024 {
            return Err(OcfError::Header("too many metadata entries".into()));
        }
        for _ in 0..count {
            let key = read_vec(r, 1024).map_err(herr)?;
            let val = read_vec(r, 16 * 1024 * 1024).map_err(herr)?;
            match key.as_slice() {
                b"avro.schema" => {
                    schema = Some(
                        String::from_utf8(val)
                            .map_err(|_| OcfError::Header("schema is not UTF-8".into()))?,
                    )
                }
                b"avro.codec" => {
                    codec = match val.as_slice() {
                        b"null" => OcfCodec::Null,
                        b"deflate" => OcfCodec::Deflate,
                        other => {
                            return Err(OcfError::Header(format!(
                                "unsupported codec {}",
                                String::from_utf8_lossy(other)
                            )))
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut sync = [0u8; 16];
    r.read_exact(&mut sync).map_err(herr)?;
    Ok(OcfHeader {
        schema_json: schema.ok_or_else(|| OcfError::Header("no avro.schema".into()))?,
        codec,
        sync,
        len: r.pos,
    })
}

/// Reads a container file block by block, with bounded memory per block.
pub struct OcfReader<R> {
    r: Counting<R>,
    pub header: OcfHeader,
    done: bool,
}

/// One decoded block: its records' concatenated datums.
pub struct OcfBlock {
    pub offset: u64,
    pub count: i64,
    pub data: Vec<u8>,
}

impl<R: Read> OcfReader<R> {
    pub fn new(inner: R) -> Result<Self, OcfError> {
        let mut r = Counting { inner, pos: 0 };
        let header = read_header(&mut r)?;
        Ok(OcfReader {
            r,
            header,
            done: false,
        })
    }

    /// Next block, `Ok(None)` at a clean end of file, an error for a torn or corrupt block
    /// (after which the reader stops).
    pub fn next_block(&mut self) -> Result<Option<OcfBlock>, OcfError> {
        if self.done {
            return Ok(None);
        }
        let offset = self.r.pos;
        let berr = |reason: String| OcfError::Block { offset, reason };
        let count = match read_long(&mut self.r) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.r.pos == offset => {
                self.done = true;
                return Ok(None);
            }
            Err(e) => {
                self.done = true;
                return Err(berr(e.to_string()));
            }
        };
        let res = (|| -> Result<OcfBlock, OcfError> {
            if count < 0 {
                return Err(berr(format!("negative record count {count}")));
            }
            let data = read_vec(&mut self.r, MAX_BLOCK_BYTES).map_err(|e| berr(e.to_string()))?;
            let mut sync = [0u8; 16];
            self.r
                .read_exact(&mut sync)
                .map_err(|e| berr(e.to_string()))?;
            if sync != self.header.sync {
                return Err(berr("sync marker mismatch".into()));
            }
            let data = match self.header.codec {
                OcfCodec::Null => data,
                OcfCodec::Deflate => {
                    miniz_oxide::inflate::decompress_to_vec_with_limit(&data, MAX_BLOCK_BYTES)
                        .map_err(|e| berr(format!("deflate: {e:?}")))?
                }
            };
            Ok(OcfBlock {
                offset,
                count,
                data,
            })
        })();
        if res.is_err() {
            self.done = true;
        }
        res.map(Some)
    }
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub valid_len: u64,
    pub records: i64,
    pub truncated_bytes: u64,
}

/// Makes a container file valid after a crash: keeps the header and every complete block,
/// cuts whatever follows the last complete block.
pub fn recover(path: &Path) -> Result<Recovered, OcfError> {
    let file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut reader = OcfReader::new(io::BufReader::new(file))?;
    let mut valid_len = reader.header.len;
    let mut records = 0;
    loop {
        match reader.next_block() {
            Ok(Some(b)) => {
                records += b.count;
                valid_len = reader.r.pos;
            }
            Ok(None) | Err(OcfError::Block { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    if valid_len < total {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(valid_len)?;
        f.sync_all()?;
    }
    Ok(Recovered {
        valid_len,
        records,
        truncated_bytes: total - valid_len,
    })
}

/// Opens a file for reading from the start (helper for callers holding a path).
pub fn open(path: &Path) -> Result<OcfReader<io::BufReader<File>>, OcfError> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(0))?;
    OcfReader::new(io::BufReader::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#;

    fn datum(n: i64) -> Vec<u8> {
        let mut v = Vec::new();
        write_long(&mut v, n);
        v
    }

    #[test]
    fn apache_avro_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.avro");
        let mut w = OcfWriter::create(&path, SCHEMA, OcfCodec::Deflate).unwrap();
        for n in 0..1000 {
            w.append_datum(&datum(n));
            if n % 300 == 0 {
                w.flush_block().unwrap();
            }
        }
        w.flush_block().unwrap();
        let reader = apache_avro::Reader::new(File::open(&path).unwrap()).unwrap();
        let got: Vec<i64> = reader
            .map(|v| match v.unwrap() {
                Value::Record(f) => match f[0].1 {
                    Value::Long(n) => n,
                    ref o => panic!("{o:?}"),
                },
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn recover_cuts_a_torn_block_and_keeps_complete_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.avro");
        let mut w = OcfWriter::create(&path, SCHEMA, OcfCodec::Deflate).unwrap();
        for n in 0..10 {
            w.append_datum(&datum(n));
        }
        w.flush_block().unwrap();
        let good_len = std::fs::metadata(&path).unwrap().len();
        // Simulate a crash in the middle of writing the next block.
        {
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&[0x14, 0x80, 0x01, 1, 2, 3]).unwrap();
        }
        let r = recover(&path).unwrap();
        assert_eq!(r.valid_len, good_len);
        assert_eq!(r.records, 10);
        assert_eq!(r.truncated_bytes, 6);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        let n = apache_avro::Reader::new(File::open(&path).unwrap())
            .unwrap()
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"Obj",
            b"Obj\x02",
            b"Obj\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"Obj\x01\x02\x7f",
            b"Obj\x01\x02\x16avro.schema\xfe\xff\xff\xff\x0f",
        ] {
            assert!(OcfReader::new(bytes).is_err(), "{bytes:?}");
        }
    }
}
