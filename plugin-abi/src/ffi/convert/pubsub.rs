use abi_stable::std_types::RVec;

use crate::ffi::{FfiHeader, FfiMessage};
use crate::Message;

/// Headers (pub/sub metadata, stream record headers) to their FFI form. Functions, not
/// `From` impls: both sides are foreign types.
pub(crate) fn headers_to_ffi(headers: Vec<(String, String)>) -> RVec<FfiHeader> {
    headers.into_iter().map(|(name, value)| FfiHeader { name: name.into(), value: value.into() }).collect()
}

pub(crate) fn headers_from_ffi(headers: RVec<FfiHeader>) -> Vec<(String, String)> {
    headers.into_iter().map(|header| (header.name.into_string(), header.value.into_string())).collect()
}

impl From<Message> for FfiMessage {
    fn from(message: Message) -> Self {
        FfiMessage {
            id: message.id.into(),
            topic: message.topic.into(),
            payload: message.payload.into(),
            metadata: headers_to_ffi(message.metadata),
            published_at_unix_ms: message.published_at_unix_ms,
            ack_id: message.ack_id.into(),
            delivery_count: message.delivery_count,
        }
    }
}

impl From<FfiMessage> for Message {
    fn from(message: FfiMessage) -> Self {
        Message {
            id: message.id.into_string(),
            topic: message.topic.into_string(),
            payload: message.payload.into_vec(),
            metadata: headers_from_ffi(message.metadata),
            published_at_unix_ms: message.published_at_unix_ms,
            ack_id: message.ack_id.into_string(),
            delivery_count: message.delivery_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let message = Message {
            id: "id-1".into(),
            topic: "orders.eu".into(),
            payload: b"{}".to_vec(),
            metadata: vec![("trace".into(), "abc".into()), ("empty".into(), String::new())],
            published_at_unix_ms: 1_700_000_000_123,
            ack_id: "ack".into(),
            delivery_count: 1,
        };
        assert_eq!(Message::from(FfiMessage::from(message.clone())), message);
    }
}
