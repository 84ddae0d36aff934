//! Pub/sub on Redis channels `{prefix}p:{topic}`. Each subscription has its own
//! connection (Redis's rule); dropping it closes the connection, which unsubscribes, and
//! losing it ends the subscription with UNAVAILABLE.
//! Patterns become PSUBSCRIBE globs (`*` per wildcard), which can over-match across
//! dots, so every message is checked against the exact pattern before delivery.
//! Id, publish time and metadata travel in a small envelope around the payload.

use plugin_abi::PluginResult;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use plugin_abi::topics::matches;
use plugin_abi::{Message, PluginError, PubSubBasic, PubSubWildcards, Subscription};
use redis::AsyncCommands;

use crate::errors::plugin_error;
use crate::Redis;

const ENVELOPE_VERSION: u8 = 1;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode(id: &str, published_at: i64, metadata: &[(String, String)], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ENVELOPE_VERSION];
    put_bytes(&mut out, id.as_bytes());
    out.extend_from_slice(&published_at.to_be_bytes());
    out.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
    for (name, value) in metadata {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Decodes an envelope; a payload some other publisher sent raw comes through as is.
fn decode(topic: String, raw: &[u8]) -> Message {
    let parsed = (|| {
        let mut reader = Reader(raw);
        if reader.take(1)? != [ENVELOPE_VERSION] {
            return None;
        }
        let id = reader.text()?;
        let published_at_unix_ms = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
        let count = reader.u32()?;
        let mut metadata = Vec::new();
        for _ in 0..count {
            metadata.push((reader.text()?, reader.text()?));
        }
        Some(Message {
            id,
            topic: topic.clone(),
            payload: reader.0.to_vec(),
            metadata,
            published_at_unix_ms,
            ack_id: String::new(),
            delivery_count: 0,
        })
    })();
    parsed.unwrap_or(Message {
        id: String::new(),
        topic,
        payload: raw.to_vec(),
        metadata: Vec::new(),
        published_at_unix_ms: 0,
        ack_id: String::new(),
        delivery_count: 0,
    })
}

/// A PSUBSCRIBE glob that matches at least every channel the pattern does.
fn glob(prefix: &str, pattern: &str) -> String {
    let escape = |text: &str| {
        text.chars().fold(String::new(), |mut out, c| {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    let tokens: Vec<String> = pattern
        .split('.')
        .map(|token| if token == "*" || token == ">" { "*".to_owned() } else { escape(token) })
        .collect();
    format!("{}{}", escape(prefix), tokens.join("."))
}

impl Redis {
    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.keys.channels)
    }

    async fn listen(&self, pattern: &str, wildcard: bool) -> PluginResult<Subscription> {
        // A cluster forwards every PUBLISH to every node: any seed that answers will do.
        let mut last_error = None;
        let mut subscribed = None;
        for client in std::iter::once(&self.client).chain(&self.other_seeds) {
            match client.get_async_pubsub().await {
                Ok(pubsub) => {
                    subscribed = Some(pubsub);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(mut pubsub) = subscribed else {
            return Err(plugin_error(last_error.expect("one seed at least was tried")));
        };
        if wildcard {
            pubsub.psubscribe(glob(&self.keys.channels, pattern)).await.map_err(plugin_error)?;
        } else {
            pubsub.subscribe(self.channel(pattern)).await.map_err(plugin_error)?;
        }
        let prefix_len = self.keys.channels.len();
        let pattern = pattern.to_owned();
        let messages = pubsub.into_on_message().filter_map(move |message| {
            let topic = message.get_channel_name().get(prefix_len..).unwrap_or_default().to_owned();
            let delivered = matches(&pattern, &topic).then(|| Ok(decode(topic, message.get_payload_bytes())));
            std::future::ready(delivered)
        });
        // The connection closing ends Redis's stream; tell the subscriber, so it resubscribes.
        let closed = futures_util::stream::once(std::future::ready(Err(PluginError::unavailable(
            "the redis subscription connection closed; subscribe again",
        ))));
        Ok(Subscription::new(messages.chain(closed)))
    }
}

impl PubSubBasic for Redis {
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String> {
        let id = format!("{:x}-{}", self.instance, NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let now = plugin_abi::unix_millis();
        let mut connection = self.connection.clone();
        connection
            .publish::<_, _, ()>(self.channel(topic), encode(&id, now, &metadata, &payload))
            .await
            .map_err(plugin_error)?;
        Ok(id)
    }

    async fn subscribe(&self, topic: &str) -> PluginResult<Subscription> {
        self.listen(topic, false).await
    }
}

impl PubSubWildcards for Redis {
    async fn subscribe_pattern(&self, pattern: &str) -> PluginResult<Subscription> {
        self.listen(pattern, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_raw_payloads_pass_through() {
        let metadata = vec![("a".to_owned(), "1".to_owned())];
        let message = decode("t".into(), &encode("id-1", 42, &metadata, b"body"));
        assert_eq!(
            (message.id.as_str(), message.published_at_unix_ms, message.payload.as_slice()),
            ("id-1", 42, &b"body"[..])
        );
        assert_eq!(message.metadata, metadata);
        let raw = decode("t".into(), b"hello");
        assert_eq!(raw.payload, b"hello".to_vec());
        assert!(raw.id.is_empty());
    }

    #[test]
    fn globs_over_match_and_escape() {
        assert_eq!(glob("p:", "a.*.c"), "p:a.*.c");
        assert_eq!(glob("p:", "a.>"), "p:a.*");
        assert_eq!(glob("x?p:", "we[ird]"), "x\\?p:we\\[ird\\]");
    }
}
