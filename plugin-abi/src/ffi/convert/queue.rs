use abi_stable::std_types::RString;

use crate::ffi::{FfiDeadLetterPage, FfiQueueMessage};
use crate::{DeadLetterPage, QueueMessage};

impl From<QueueMessage> for FfiQueueMessage {
    fn from(message: QueueMessage) -> Self {
        FfiQueueMessage {
            id: message.id.into(),
            payload: message.payload.into(),
            receipt: message.receipt.into(),
            delivery_count: message.delivery_count,
            enqueued_at_unix_ms: message.enqueued_at_unix_ms,
        }
    }
}

impl From<FfiQueueMessage> for QueueMessage {
    fn from(message: FfiQueueMessage) -> Self {
        QueueMessage {
            id: message.id.into_string(),
            payload: message.payload.into_vec(),
            receipt: message.receipt.into_string(),
            delivery_count: message.delivery_count,
            enqueued_at_unix_ms: message.enqueued_at_unix_ms,
        }
    }
}

impl From<DeadLetterPage> for FfiDeadLetterPage {
    fn from(page: DeadLetterPage) -> Self {
        FfiDeadLetterPage {
            messages: page.messages.into_iter().map(FfiQueueMessage::from).collect(),
            next_cursor: page.next_cursor.map(RString::from).into(),
        }
    }
}

impl From<FfiDeadLetterPage> for DeadLetterPage {
    fn from(page: FfiDeadLetterPage) -> Self {
        DeadLetterPage {
            messages: page.messages.into_iter().map(QueueMessage::from).collect(),
            next_cursor: page.next_cursor.into_option().map(RString::into_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_types_round_trip() {
        let message = QueueMessage {
            id: "m1".into(),
            payload: b"job".to_vec(),
            receipt: "m1:token".into(),
            delivery_count: 2,
            enqueued_at_unix_ms: 1_700_000_000_000,
        };
        assert_eq!(QueueMessage::from(FfiQueueMessage::from(message.clone())), message);
        let page = DeadLetterPage { messages: vec![message], next_cursor: Some("m1".into()) };
        assert_eq!(DeadLetterPage::from(FfiDeadLetterPage::from(page.clone())), page);
    }
}
