//! How a multicast message travels through the messaging and durability slots: one
//! byte string carrying the message id, send time, headers and payload, so any pub/sub
//! or queue plugin can carry it unchanged. `decode` never panics on foreign bytes.

use std::collections::BTreeMap;

/// The envelope: `u32` id length, id, `i64` time, `u32` header count, then per header
/// `u32` length + name and `u32` length + value, then the payload.
pub(super) struct Envelope {
    pub(super) id: String,
    pub(super) sent_at: i64,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) payload: Vec<u8>,
}

impl Envelope {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.payload.len());
        let put = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        put(&mut out, self.id.as_bytes());
        out.extend_from_slice(&self.sent_at.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in &self.headers {
            put(&mut out, name.as_bytes());
            put(&mut out, value.as_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Envelope> {
        let mut reader = Reader(bytes);
        let id = reader.string()?;
        let sent_at = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
        let count = reader.u32()?;
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let name = reader.string()?;
            headers.insert(name, reader.string()?);
        }
        Some(Envelope { id, sent_at, headers, payload: reader.0.to_vec() })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let headers =
            BTreeMap::from([("trace".to_owned(), "abc".to_owned()), ("empty".to_owned(), String::new())]);
        Envelope {
            id: "m-1".into(),
            sent_at: 1_700_000_000_123,
            headers,
            payload: b"\x00binary\xff".to_vec(),
        }
    }

    #[test]
    fn round_trips() {
        let envelope = sample();
        let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.sent_at, envelope.sent_at);
        assert_eq!(decoded.headers, envelope.headers);
        assert_eq!(decoded.payload, envelope.payload);
        let empty =
            Envelope { id: String::new(), sent_at: -1, headers: BTreeMap::new(), payload: Vec::new() };
        let decoded = Envelope::decode(&empty.encode()).expect("decodes");
        assert!(decoded.id.is_empty() && decoded.headers.is_empty() && decoded.payload.is_empty());
    }

    #[test]
    fn corrupt_input_is_refused_without_panicking() {
        let bytes = sample().encode();
        // Every truncation before the payload, and garbage, decode to None or to
        // something shorter, never a panic.
        let payload_start = bytes.len() - sample().payload.len();
        for cut in 0..payload_start {
            assert!(Envelope::decode(&bytes[..cut]).is_none(), "a cut at {cut} must not decode");
        }
        assert!(Envelope::decode(&[0xff; 3]).is_none());
        // A length past the end, a header count past what follows, invalid UTF-8.
        assert!(Envelope::decode(&[0xff, 0xff, 0xff, 0xff, b'x']).is_none());
        let mut huge_count = sample().encode()[..4 + 3 + 8].to_vec();
        huge_count.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Envelope::decode(&huge_count).is_none());
        let mut bad_utf8 = 2u32.to_be_bytes().to_vec();
        bad_utf8.extend_from_slice(&[0xc3, 0x28]);
        assert!(Envelope::decode(&bad_utf8).is_none());
        // Plain text someone published on the channel by hand.
        let _ = Envelope::decode(b"hello world");
    }
}
