//! A serde `Serializer` that writes Avro binary directly, without building
//! `apache_avro::types::Value` trees (the hot path must reach millions of events per core).
//!
//! It is driven by the Rust type, not by a schema, so it relies on the model types mirroring
//! the schemas exactly: struct fields in schema order, enum variants in symbol order, and
//! every optional field being a `["null", T]` union (`None` → branch 0, `Some` → branch 1).
//! `tests/schemas.rs` proves the bytes equal what `apache_avro` writes from the `.avsc`.

use serde::ser::{self, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum AvroSerError {
    #[error("avro encode: {0}")]
    Custom(String),
    #[error("avro encode: {0} cannot be represented by the bridge's schemas")]
    Unsupported(&'static str),
}

impl ser::Error for AvroSerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        AvroSerError::Custom(msg.to_string())
    }
}

/// Appends the Avro binary encoding of `value` to `out`.
pub fn write_datum<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), AvroSerError> {
    value.serialize(&mut AvroSerializer { out })
}

/// Avro `long`/`int`: zig-zag, then base-128 varint.
#[inline]
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

pub struct AvroSerializer<'a> {
    out: &'a mut Vec<u8>,
}

/// Collects sequence or map items so their count can be written as one Avro block.
pub struct BlockSerializer<'a, 'b> {
    ser: &'b mut AvroSerializer<'a>,
    /// Items are written to a scratch buffer when the length was not known up front.
    pending: Option<(Vec<u8>, usize)>,
}

impl<'a, 'b> BlockSerializer<'a, 'b> {
    fn new(ser: &'b mut AvroSerializer<'a>, len: Option<usize>) -> Self {
        match len {
            Some(0) => BlockSerializer { ser, pending: None },
            Some(n) => {
                write_long(ser.out, n as i64);
                BlockSerializer { ser, pending: None }
            }
            None => BlockSerializer {
                ser,
                pending: Some((Vec::new(), 0)),
            },
        }
    }

    fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AvroSerError> {
        match &mut self.pending {
            None => v.serialize(&mut *self.ser),
            Some((buf, n)) => {
                *n += 1;
                v.serialize(&mut AvroSerializer { out: buf })
            }
        }
    }

    fn finish(self) -> Result<(), AvroSerError> {
        if let Some((buf, n)) = self.pending {
            if n > 0 {
                write_long(self.ser.out, n as i64);
                self.ser.out.extend_from_slice(&buf);
            }
        }
        // Terminating zero-count block.
        self.ser.out.push(0);
        Ok(())
    }
}

impl<'a, 'b> ser::Serializer for &'b mut AvroSerializer<'a> {
    type Ok = ();
    type Error = AvroSerError;
    type SerializeSeq = BlockSerializer<'a, 'b>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), AvroSerError>;
    type SerializeMap = BlockSerializer<'a, 'b>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), AvroSerError>;

    fn serialize_bool(self, v: bool) -> Result<(), AvroSerError> {
        self.out.push(v as u8);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), AvroSerError> {
        write_long(self.out, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), AvroSerError> {
        write_long(self.out, v as i64);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), AvroSerError> {
        let v = i64::try_from(v).map_err(|_| AvroSerError::Unsupported("u64 above i64::MAX"))?;
        write_long(self.out, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), AvroSerError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), AvroSerError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), AvroSerError> {
        let mut b = [0u8; 4];
        write_bytes(self.out, v.encode_utf8(&mut b).as_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), AvroSerError> {
        write_bytes(self.out, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), AvroSerError> {
        write_bytes(self.out, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), AvroSerError> {
        self.out.push(0); // union branch 0: "null"
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), AvroSerError> {
        self.out.push(2); // union branch 1 (zig-zag of 1)
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), AvroSerError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), AvroSerError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        variant_index: u32,
        _: &'static str,
    ) -> Result<(), AvroSerError> {
        write_long(self.out, variant_index as i64); // Avro enum: symbol index
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), AvroSerError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        variant_index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), AvroSerError> {
        // A union whose branches are the variants, in order.
        write_long(self.out, variant_index as i64);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, AvroSerError> {
        Ok(BlockSerializer::new(self, len))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, AvroSerError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, AvroSerError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, AvroSerError> {
        Err(AvroSerError::Unsupported("tuple variant"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, AvroSerError> {
        Ok(BlockSerializer::new(self, len))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, AvroSerError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, AvroSerError> {
        Err(AvroSerError::Unsupported("struct variant"))
    }
}

impl ser::SerializeSeq for BlockSerializer<'_, '_> {
    type Ok = ();
    type Error = AvroSerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AvroSerError> {
        self.item(v)
    }
    fn end(self) -> Result<(), AvroSerError> {
        self.finish()
    }
}

impl ser::SerializeMap for BlockSerializer<'_, '_> {
    type Ok = ();
    type Error = AvroSerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), AvroSerError> {
        self.item(k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AvroSerError> {
        // The count was already bumped by the key; values go to the same place.
        match &mut self.pending {
            None => v.serialize(&mut *self.ser),
            Some((buf, _)) => v.serialize(&mut AvroSerializer { out: buf }),
        }
    }
    fn end(self) -> Result<(), AvroSerError> {
        self.finish()
    }
}

impl ser::SerializeTuple for &mut AvroSerializer<'_> {
    type Ok = ();
    type Error = AvroSerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AvroSerError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), AvroSerError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut AvroSerializer<'_> {
    type Ok = ();
    type Error = AvroSerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AvroSerError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), AvroSerError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut AvroSerializer<'_> {
    type Ok = ();
    type Error = AvroSerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), AvroSerError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), AvroSerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_match_the_spec() {
        // Values from the Avro specification's table.
        for (v, want) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
    }

    #[test]
    fn maps_and_options_encode_as_blocks_and_unions() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("a".to_string(), "b".to_string());
        let mut out = Vec::new();
        write_datum(&mut out, &(Some(1i64), None::<i64>, m)).unwrap();
        assert_eq!(out, vec![2, 2, 0, 2, 2, b'a', 2, b'b', 0]);
        let mut out = Vec::new();
        write_datum(
            &mut out,
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        assert_eq!(out, vec![0]);
    }
}
