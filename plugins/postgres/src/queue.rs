//! Queues: rows of `{queue_table}`, claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! A delivery sets `visible_at` to the end of the visibility timeout and a fresh random
//! `receipt`; ack/nack/extend must present the current receipt, so a consumer whose
//! timeout lapsed (and whose message went to someone else) cannot ack it. A message that
//! becomes visible again after `max_deliveries` deliveries is dead-lettered instead.

use plugin_abi::PluginResult;
use std::time::Duration;

use plugin_abi::{
    DeadLetterPage, PluginError, QueueBasic, QueueDeadLetter, QueueDelayed, QueueMessage, QueueVisibility,
};
use tokio_postgres::Row;

use crate::errors::db_error;
use crate::Postgres;

/// Most messages one dequeue hands out.
const MAX_BATCH: u32 = 100;

/// Receipts are `{id}:{token}`: the id finds the row, the token proves the delivery.
fn parse_receipt(receipt: &str) -> PluginResult<(i64, &str)> {
    receipt
        .split_once(':')
        .and_then(|(id, token)| Some((id.parse().ok()?, token)))
        .filter(|(_, token)| !token.is_empty())
        .ok_or_else(|| {
            PluginError::invalid_argument(format!("'{receipt}' is not a receipt this queue issued"))
        })
}

fn message(row: &Row) -> QueueMessage {
    let id: i64 = row.get("id");
    let token: Option<String> = row.get("receipt");
    QueueMessage {
        id: id.to_string(),
        payload: row.get("payload"),
        receipt: token.map(|token| format!("{id}:{token}")).unwrap_or_default(),
        delivery_count: row.get::<_, i32>("deliveries") as u32,
        enqueued_at_unix_ms: row.get("enqueued_ms"),
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Postgres {
    async fn deliver(&self, queue: &str, max: u32, visibility: Duration) -> PluginResult<Vec<QueueMessage>> {
        let max = i64::from(max.clamp(1, MAX_BATCH));
        let client = self.client().await?;
        let sql = format!(
            "WITH ready AS (
                 SELECT id FROM {q} WHERE queue = $1 AND dead_at IS NULL AND visible_at <= clock_timestamp()
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
             )
             UPDATE {q} AS m SET
                 dead_at = CASE WHEN m.deliveries >= $4 THEN clock_timestamp() END,
                 deliveries = CASE WHEN m.deliveries >= $4 THEN m.deliveries ELSE m.deliveries + 1 END,
                 receipt = CASE WHEN m.deliveries >= $4 THEN NULL ELSE gen_random_uuid()::text END,
                 visible_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000)
             FROM ready WHERE m.id = ready.id
             RETURNING m.id, m.payload, m.deliveries, m.receipt, m.dead_at IS NOT NULL AS dead,
                       (extract(epoch FROM m.enqueued_at) * 1000)::int8 AS enqueued_ms",
            q = self.sql.queue
        );
        let max_deliveries = self.config.max_deliveries as i32;
        // Rows claimed only to be dead-lettered do not count; try again while that happens.
        for _ in 0..10 {
            let rows = client
                .query(
                    &client.prepare_cached(&sql).await.map_err(db_error)?,
                    &[&queue, &max, &millis(visibility), &max_deliveries],
                )
                .await
                .map_err(db_error)?;
            let claimed = rows.len();
            let mut delivered: Vec<QueueMessage> =
                rows.iter().filter(|row| !row.get::<_, bool>("dead")).map(message).collect();
            if !delivered.is_empty() || claimed == 0 {
                delivered.sort_by_key(|m| m.id.parse::<i64>().unwrap_or_default());
                return Ok(delivered);
            }
        }
        Ok(Vec::new())
    }

    async fn insert(
        &self,
        queue: &str,
        payload: &[u8],
        deliver_at_unix_ms: Option<i64>,
    ) -> PluginResult<String> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (queue, payload, visible_at) \
             VALUES ($1, $2, COALESCE(to_timestamp($3::float8 / 1000), clock_timestamp())) RETURNING id",
            self.sql.queue
        );
        let at = deliver_at_unix_ms.map(|ms| ms as f64);
        let row = client
            .query_one(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&queue, &payload, &at])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, i64>(0).to_string())
    }
}

impl QueueBasic for Postgres {
    async fn enqueue(&self, queue: &str, payload: Vec<u8>) -> PluginResult<String> {
        self.insert(queue, &payload, None).await
    }

    async fn dequeue(&self, queue: &str, max: u32) -> PluginResult<Vec<QueueMessage>> {
        self.deliver(queue, max, Duration::from_millis(self.config.visibility_timeout_ms)).await
    }

    async fn ack(&self, queue: &str, receipt: &str) -> PluginResult<bool> {
        let (id, token) = parse_receipt(receipt)?;
        let client = self.client().await?;
        let sql = format!(
            "DELETE FROM {} WHERE id = $1 AND queue = $2 AND receipt = $3 AND dead_at IS NULL",
            self.sql.queue
        );
        Ok(client
            .execute(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&id, &queue, &token])
            .await
            .map_err(db_error)?
            > 0)
    }

    async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> PluginResult<bool> {
        let (id, token) = parse_receipt(receipt)?;
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} SET receipt = NULL,
                 visible_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
                 dead_at = CASE WHEN deliveries >= $5 THEN clock_timestamp() END
             WHERE id = $1 AND queue = $2 AND receipt = $3 AND dead_at IS NULL",
            self.sql.queue
        );
        let max_deliveries = self.config.max_deliveries as i32;
        let changed = client
            .execute(
                &client.prepare_cached(&sql).await.map_err(db_error)?,
                &[&id, &queue, &token, &millis(delay), &max_deliveries],
            )
            .await
            .map_err(db_error)?;
        Ok(changed > 0)
    }
}

impl QueueVisibility for Postgres {
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
        let (id, token) = parse_receipt(receipt)?;
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} SET visible_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
             WHERE id = $1 AND queue = $2 AND receipt = $3 AND dead_at IS NULL",
            self.sql.queue
        );
        Ok(client
            .execute(
                &client.prepare_cached(&sql).await.map_err(db_error)?,
                &[&id, &queue, &token, &millis(visibility)],
            )
            .await
            .map_err(db_error)?
            > 0)
    }
}

impl QueueDeadLetter for Postgres {
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
        let client = self.client().await?;
        let sql = format!(
            "SELECT id, payload, deliveries, NULL::text AS receipt,
                    (extract(epoch FROM enqueued_at) * 1000)::int8 AS enqueued_ms
             FROM {} WHERE queue = $1 AND dead_at IS NOT NULL AND id > $2 ORDER BY id LIMIT $3",
            self.sql.queue
        );
        let rows = client
            .query(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&queue, &after, &(limit + 1)])
            .await
            .map_err(db_error)?;
        let more = rows.len() as i64 > limit;
        let messages: Vec<QueueMessage> = rows.iter().take(limit as usize).map(message).collect();
        let next_cursor = if more { messages.last().map(|m| m.id.clone()) } else { None };
        Ok(DeadLetterPage { messages, next_cursor })
    }

    async fn replay_dead_letters(&self, queue: &str, ids: Vec<String>) -> PluginResult<u64> {
        let ids: Vec<i64> = ids
            .iter()
            .map(|id| {
                id.parse().map_err(|_| PluginError::invalid_argument(format!("'{id}' is not a message id")))
            })
            .collect::<PluginResult<_>>()?;
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} SET dead_at = NULL, deliveries = 0, receipt = NULL, visible_at = clock_timestamp()
             WHERE queue = $1 AND dead_at IS NOT NULL AND (cardinality($2::int8[]) = 0 OR id = ANY($2))",
            self.sql.queue
        );
        client
            .execute(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&queue, &ids])
            .await
            .map_err(db_error)
    }
}

impl QueueDelayed for Postgres {
    async fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> PluginResult<String> {
        self.insert(queue, &payload, Some(deliver_at_unix_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::parse_receipt;

    #[test]
    fn receipts_carry_the_row_and_the_delivery_token() {
        assert_eq!(parse_receipt("42:abc-def").unwrap(), (42, "abc-def"));
        for bad in ["", "42", "42:", "x:abc", ":abc"] {
            assert!(parse_receipt(bad).is_err(), "{bad:?}");
        }
    }
}
