//! Queues: rows of `prism_queue`, claimed inside one write transaction (SQLite has one
//! writer at a time, so two consumers never claim the same row).
//!
//! A delivery sets `visible_at` to the end of the visibility timeout and a fresh random
//! `receipt`; ack/nack/extend must present the current receipt, so a consumer whose
//! timeout lapsed (and whose message went to someone else) cannot ack it. A message that
//! becomes visible again after `max_deliveries` deliveries is dead-lettered instead.

use std::time::Duration;

use plugin_abi::{
    DeadLetterPage, PluginError, PluginResult, QueueBasic, QueueDeadLetter, QueueDelayed, QueueMessage,
    QueueVisibility,
};
use rusqlite::{params, Connection};

use crate::Sqlite;

/// Most messages one dequeue hands out.
const MAX_BATCH: u32 = 100;

/// Receipts are `{id}:{token}`: the id finds the row, the token proves the delivery.
fn parse_receipt(receipt: &str) -> PluginResult<(i64, String)> {
    receipt
        .split_once(':')
        .and_then(|(id, token)| Some((id.parse().ok()?, token.to_owned())))
        .filter(|(_, token)| !token.is_empty())
        .ok_or_else(|| {
            PluginError::invalid_argument(format!("'{receipt}' is not a receipt this queue issued"))
        })
}

fn token() -> rusqlite::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        rusqlite::Error::ToSqlConversionFailure(format!("no randomness for a receipt: {e}").into())
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

struct Claimed {
    id: i64,
    payload: Vec<u8>,
    deliveries: u32,
    enqueued_at: i64,
}

/// Hands out up to `max` visible messages, oldest first; dead-letters the ones that
/// have used up their deliveries instead of handing them out.
fn deliver(
    c: &Connection,
    now: i64,
    queue: &str,
    max: u32,
    visibility: Duration,
    max_deliveries: u32,
) -> rusqlite::Result<Vec<QueueMessage>> {
    let mut delivered = Vec::new();
    let mut ready = c.prepare_cached(
        "SELECT id, payload, deliveries, enqueued_at FROM prism_queue \
         WHERE queue = ?1 AND dead_at IS NULL AND visible_at <= ?2 ORDER BY id LIMIT ?3",
    )?;
    let mut bury = c.prepare_cached("UPDATE prism_queue SET dead_at = ?2, receipt = NULL WHERE id = ?1")?;
    let mut hand_out = c.prepare_cached(
        "UPDATE prism_queue SET deliveries = ?2, receipt = ?3, visible_at = ?4 WHERE id = ?1",
    )?;
    // Rows found only to be dead-lettered do not count; look again while that happens.
    for _ in 0..10 {
        let claimed: Vec<Claimed> = ready
            .query_map(params![queue, now, i64::from(max)], |row| {
                Ok(Claimed {
                    id: row.get(0)?,
                    payload: row.get(1)?,
                    deliveries: row.get(2)?,
                    enqueued_at: row.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        if claimed.is_empty() {
            break;
        }
        for message in claimed {
            if message.deliveries >= max_deliveries {
                bury.execute(params![message.id, now])?;
                continue;
            }
            let receipt = token()?;
            let deliveries = message.deliveries + 1;
            hand_out.execute(params![
                message.id,
                deliveries,
                receipt,
                now.saturating_add(millis(visibility))
            ])?;
            delivered.push(QueueMessage {
                id: message.id.to_string(),
                payload: message.payload,
                receipt: format!("{}:{receipt}", message.id),
                delivery_count: deliveries,
                enqueued_at_unix_ms: message.enqueued_at,
            });
        }
        if !delivered.is_empty() {
            break;
        }
    }
    Ok(delivered)
}

impl Sqlite {
    async fn deliver(&self, queue: &str, max: u32, visibility: Duration) -> PluginResult<Vec<QueueMessage>> {
        let queue = queue.to_owned();
        let max_deliveries = self.config.max_deliveries;
        self.write(move |c, now| deliver(c, now, &queue, max.clamp(1, MAX_BATCH), visibility, max_deliveries))
            .await
    }

    async fn insert(&self, queue: &str, payload: Vec<u8>, deliver_at: Option<i64>) -> PluginResult<String> {
        let queue = queue.to_owned();
        self.write(move |c, now| {
            c.prepare_cached(
                "INSERT INTO prism_queue (queue, payload, enqueued_at, visible_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            )?
            .query_row(params![queue, payload, now, deliver_at.unwrap_or(now)], |row| row.get::<_, i64>(0))
            .map(|id| id.to_string())
        })
        .await
    }

    /// Runs `change` on the delivery `receipt` names, with the row's id, queue, token
    /// and now; false when nothing changed (the receipt is stale).
    async fn with_receipt(
        &self,
        queue: &str,
        receipt: &str,
        change: impl FnOnce(&Connection, Delivery<'_>) -> rusqlite::Result<usize> + Send + 'static,
    ) -> PluginResult<bool> {
        let (id, token) = parse_receipt(receipt)?;
        let queue = queue.to_owned();
        self.write(move |c, now| {
            change(c, Delivery { id, queue: &queue, token: &token, now }).map(|changed| changed > 0)
        })
        .await
    }
}

/// One delivery, as a receipt names it. Statements match it with `current_delivery!()`.
struct Delivery<'a> {
    id: i64,
    queue: &'a str,
    token: &'a str,
    now: i64,
}

/// Matches only the current delivery of a live message (`?1` id, `?2` queue, `?3` token);
/// a macro so the statements are `concat!`ed at compile time.
macro_rules! current_delivery {
    () => {
        "id = ?1 AND queue = ?2 AND receipt = ?3 AND dead_at IS NULL"
    };
}

impl QueueBasic for Sqlite {
    async fn enqueue(&self, queue: &str, payload: Vec<u8>) -> PluginResult<String> {
        self.insert(queue, payload, None).await
    }

    async fn dequeue(&self, queue: &str, max: u32) -> PluginResult<Vec<QueueMessage>> {
        self.deliver(queue, max, Duration::from_millis(self.config.visibility_timeout_ms)).await
    }

    async fn ack(&self, queue: &str, receipt: &str) -> PluginResult<bool> {
        self.with_receipt(queue, receipt, |c, d| {
            c.prepare_cached(concat!("DELETE FROM prism_queue WHERE ", current_delivery!()))?
                .execute(params![d.id, d.queue, d.token])
        })
        .await
    }

    async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> PluginResult<bool> {
        let max_deliveries = self.config.max_deliveries;
        self.with_receipt(queue, receipt, move |c, d| {
            c.prepare_cached(concat!(
                "UPDATE prism_queue SET receipt = NULL, visible_at = ?4, \
                 dead_at = CASE WHEN deliveries >= ?5 THEN ?6 END WHERE ",
                current_delivery!()
            ))?
            .execute(params![
                d.id,
                d.queue,
                d.token,
                d.now.saturating_add(millis(delay)),
                max_deliveries,
                d.now
            ])
        })
        .await
    }
}

impl QueueVisibility for Sqlite {
    async fn dequeue_with_visibility(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> PluginResult<Vec<QueueMessage>> {
        self.deliver(queue, max, visibility).await
    }

    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> PluginResult<bool> {
        self.with_receipt(queue, receipt, move |c, d| {
            c.prepare_cached(concat!("UPDATE prism_queue SET visible_at = ?4 WHERE ", current_delivery!()))?
                .execute(params![d.id, d.queue, d.token, d.now.saturating_add(millis(visibility))])
        })
        .await
    }
}

impl QueueDeadLetter for Sqlite {
    async fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> PluginResult<DeadLetterPage> {
        let after: i64 = match cursor {
            Some(cursor) => cursor.parse().map_err(|_| {
                PluginError::invalid_argument(format!("'{cursor}' is not a dead-letter cursor"))
            })?,
            None => 0,
        };
        let limit = i64::from(limit.clamp(1, 1000));
        let queue = queue.to_owned();
        self.read(move |c, _| {
            let mut messages: Vec<QueueMessage> = c
                .prepare_cached(
                    "SELECT id, payload, deliveries, enqueued_at FROM prism_queue \
                     WHERE queue = ?1 AND dead_at IS NOT NULL AND id > ?2 ORDER BY id LIMIT ?3",
                )?
                .query_map(params![queue, after, limit + 1], |row| {
                    Ok(QueueMessage {
                        id: row.get::<_, i64>(0)?.to_string(),
                        payload: row.get(1)?,
                        receipt: String::new(),
                        delivery_count: row.get(2)?,
                        enqueued_at_unix_ms: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let more = messages.len() as i64 > limit;
            messages.truncate(limit as usize);
            let next_cursor = if more { messages.last().map(|m| m.id.clone()) } else { None };
            Ok(DeadLetterPage { messages, next_cursor })
        })
        .await
    }

    async fn replay_dead_letters(&self, queue: &str, ids: Vec<String>) -> PluginResult<u64> {
        let ids: Vec<i64> = ids
            .iter()
            .map(|id| {
                id.parse().map_err(|_| PluginError::invalid_argument(format!("'{id}' is not a message id")))
            })
            .collect::<PluginResult<_>>()?;
        let queue = queue.to_owned();
        self.write(move |c, now| {
            macro_rules! revive {
                () => {
                    "UPDATE prism_queue SET dead_at = NULL, deliveries = 0, receipt = NULL, visible_at = ?2 \
                     WHERE queue = ?1 AND dead_at IS NOT NULL"
                };
            }
            if ids.is_empty() {
                return c.prepare_cached(revive!())?.execute(params![queue, now]).map(|n| n as u64);
            }
            let mut revive = c.prepare_cached(concat!(revive!(), " AND id = ?3"))?;
            let mut moved = 0;
            for id in &ids {
                moved += revive.execute(params![queue, now, id])? as u64;
            }
            Ok(moved)
        })
        .await
    }
}

impl QueueDelayed for Sqlite {
    async fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> PluginResult<String> {
        self.insert(queue, payload, Some(deliver_at_unix_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::parse_receipt;

    #[test]
    fn receipts_carry_the_row_and_the_delivery_token() {
        assert_eq!(parse_receipt("42:abc-def").unwrap(), (42, "abc-def".to_owned()));
        for bad in ["", "42", "42:", "x:abc", ":abc"] {
            assert!(parse_receipt(bad).is_err(), "{bad:?}");
        }
    }
}
