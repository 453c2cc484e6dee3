//! The protobuf wire format, as far as ONNX's messages need it: varints, 32-bit floats and
//! length-delimited fields (strings, bytes, nested messages, packed repeated integers).

/// A message being written.
#[derive(Default)]
pub struct Message(pub Vec<u8>);

const VARINT: u64 = 0;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    fn key(&mut self, field: u64, wire: u64) {
        varint(&mut self.0, (field << 3) | wire);
    }
    /// int32/int64/enum/bool field (negative values as 10-byte two's complement, as protobuf does).
    pub fn int(&mut self, field: u64, v: i64) -> &mut Self {
        self.key(field, VARINT);
        varint(&mut self.0, v as u64);
        self
    }
    pub fn float(&mut self, field: u64, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, field: u64, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, field: u64, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }
    pub fn message(&mut self, field: u64, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }
    /// A packed repeated int64 field.
    pub fn packed_ints(&mut self, field: u64, values: &[i64]) -> &mut Self {
        let mut body = Vec::new();
        for &v in values {
            varint(&mut body, v as u64);
        }
        self.bytes(field, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_protobuf_does() {
        // Reference bytes from the protobuf encoding guide: field 1 varint 150 = 08 96 01.
        assert_eq!(Message::default().int(1, 150).0, [0x08, 0x96, 0x01]);
        // Field 2 string "testing" = 12 07 74 65 73 74 69 6e 67.
        assert_eq!(Message::default().str(2, "testing").0, b"\x12\x07testing");
        // -1 as int64: ten bytes.
        assert_eq!(Message::default().int(1, -1).0.len(), 11);
        assert_eq!(Message::default().float(3, 1.0).0, [0x1d, 0, 0, 0x80, 0x3f]);
        assert_eq!(Message::default().packed_ints(4, &[3, 270]).0, [0x22, 0x03, 0x03, 0x8e, 0x02]);
    }
}
