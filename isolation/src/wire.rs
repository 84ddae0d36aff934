//! The framing between the gateway and a plugin's process, over one Unix socket.
//!
//! A frame is a little-endian `u32` length, then a kind byte, a `u64` id and a bincode
//! body. The gateway sends calls (id = the call's own), feed credits and cancels, and
//! pings; the child answers each call once (`REPLY`, whose body is the call's
//! `PluginResult<T>`), and a call that opened a feed (a subscription, a stream read, a
//! group membership, an object's chunks) then sends `ITEMS` frames under the same id —
//! never more than the credit the gateway gave — and one `END`.

use plugin_abi::PluginError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Gateway → child.
pub const CALL: u8 = 1;
pub const CREDIT: u8 = 2;
pub const CANCEL: u8 = 3;
pub const PING: u8 = 4;
/// Child → gateway.
pub const REPLY: u8 = 1;
pub const ITEMS: u8 = 2;
pub const END: u8 = 3;
pub const PONG: u8 = 4;

/// The largest frame either side accepts: a value or chunk is bounded by the gateway's
/// limits long before this; anything larger is a broken peer.
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// Each end reads the socket through a buffer of this size.
pub const READ_BUFFER: usize = 64 * 1024;

/// How many `ITEMS` frames of one feed may be in flight before the gateway takes one.
pub const FEED_CREDIT: usize = 4;
/// Most items one `ITEMS` frame of messages or events carries.
pub const FEED_BATCH: usize = 64;

/// What the gateway sends first: which library to open, and the slot it serves.
#[derive(Serialize, Deserialize)]
pub struct Hello {
    pub library: std::path::PathBuf,
    pub config: String,
    pub namespace: String,
}

/// The child's answer to the hello: the plugin's metadata, and what its sandbox enforces
/// (`prism status` shows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub metadata: plugin_abi::Metadata,
    pub sandbox: String,
}

/// What the gateway asks of the child: its health, its end, an interface call (in the
/// form generated from the interface declarations), or a step of an object upload or
/// read, which spans several frames and so is carried by hand.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Health,
    Shutdown,
    Interface(plugin_abi::remote::Call),
    /// Starts an upload; later calls name it by this call's id.
    ObjectPut {
        key: String,
    },
    ObjectWrite {
        upload: u64,
        chunk: Vec<u8>,
    },
    ObjectFinish {
        upload: u64,
    },
    ObjectAbort {
        upload: u64,
    },
    /// Replies with the object's info; when there is one, opens a feed of its chunks.
    ObjectGet {
        key: String,
    },
    ObjectHead {
        key: String,
    },
    ObjectDelete {
        key: String,
    },
    ObjectList {
        prefix: String,
        after: String,
        limit: u32,
    },
}

/// A frame: kind, id and encoded body, with its length prefix.
pub fn frame(kind: u8, id: u64, body: &impl Serialize) -> Vec<u8> {
    let size = bincode::serialized_size(body).unwrap_or(0) as usize;
    let mut buffer = Vec::with_capacity(4 + 9 + size);
    buffer.extend_from_slice(&0u32.to_le_bytes());
    buffer.push(kind);
    buffer.extend_from_slice(&id.to_le_bytes());
    // Writing into a Vec fails only for types serde cannot encode, which none of ours is.
    bincode::serialize_into(&mut buffer, body).expect("wire types always encode");
    let length = u32::try_from(buffer.len() - 4).unwrap_or(u32::MAX);
    buffer[..4].copy_from_slice(&length.to_le_bytes());
    buffer
}

/// A received frame.
pub struct Frame {
    pub kind: u8,
    pub id: u64,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        bincode::deserialize(&self.body[9..]).map_err(|error| format!("undecodable frame: {error}"))
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(length) as usize;
    if !(9..=MAX_FRAME_BYTES).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes is not one this protocol sends"),
        ));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    let kind = body[0];
    let id = u64::from_le_bytes(body[1..9].try_into().expect("eight bytes"));
    Ok(Some(Frame { kind, id, body }))
}

/// The error a call fails with when its answer cannot be read.
pub fn undecodable(what: &str, error: String) -> PluginError {
    PluginError::internal(format!("the plugin process sent {what} this gateway cannot read: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_abi::PluginResult;

    #[tokio::test]
    async fn frames_round_trip() {
        use plugin_abi::remote::{Call as InterfaceCall, KeyValueCasCall};
        let cas = KeyValueCasCall::CompareAndSwap {
            key: "k".into(),
            expected_version: 3,
            value: vec![1, 2],
            ttl: None,
        };
        let call = Call::Interface(InterfaceCall::KeyValueCas(cas));
        let bytes = frame(CALL, 42, &call);
        let mut reader = &bytes[..];
        let read = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((read.kind, read.id), (CALL, 42));
        let decoded: Call = read.decode().unwrap();
        assert!(matches!(
            decoded,
            Call::Interface(InterfaceCall::KeyValueCas(KeyValueCasCall::CompareAndSwap {
                expected_version: 3,
                ..
            }))
        ));
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn errors_keep_code_message_and_retryability() {
        let result: PluginResult<u64> = Err(PluginError::failed_precondition("moved").with_retryable(true));
        let bytes = frame(REPLY, 7, &result);
        let read = read_frame(&mut &bytes[..]).await.unwrap().unwrap();
        let decoded: PluginResult<u64> = read.decode().unwrap();
        assert_eq!(decoded, result);
    }

    #[tokio::test]
    async fn an_oversized_or_runt_frame_is_refused() {
        let mut huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(read_frame(&mut &huge[..]).await.is_err());
        let runt = 3u32.to_le_bytes();
        assert!(read_frame(&mut &runt[..]).await.is_err());
    }
}
