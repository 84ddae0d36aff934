//! The key-value interfaces: basic, ttl, scan, batch and cas. A row whose `expires_at`
//! has passed is gone for every read and conditional write at once (`LIVE`); the expiry
//! reaper deletes it later, in small batches.

use deadpool_postgres::ClientWrapper;
use futures_util::future::join_all;
use plugin_abi::PluginResult;
use plugin_abi::{
    CasResult, KeyTtl, KeyValueBasic, KeyValueBatch, KeyValueCas, KeyValueScan, KeyValueTtl, PluginError,
    ScanPage, Versioned,
};

use crate::errors::db_error;
use crate::Postgres;

/// The condition a row must meet to exist for a reader.
pub(crate) const LIVE: &str = "(expires_at IS NULL OR expires_at > clock_timestamp())";

/// `expires_at` for a TTL given as `$n` in milliseconds (a float8 parameter).
fn expiry_at(param: usize) -> String {
    format!("clock_timestamp() + ${param}::float8 * interval '1 millisecond'")
}

fn millis(ttl: std::time::Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

fn text(key: Vec<u8>) -> PluginResult<String> {
    String::from_utf8(key).map_err(|_| PluginError::internal("a stored key is not UTF-8"))
}

/// Statements shared by plain calls and transactions, on any client.
pub(crate) struct Statements<'a> {
    pub kv: &'a str,
}

impl Statements<'_> {
    pub async fn get(&self, client: &ClientWrapper, key: &str) -> PluginResult<Option<Vec<u8>>> {
        let sql = format!("SELECT value FROM {} WHERE key = $1 AND {LIVE}", self.kv);
        let row = client
            .query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn set(&self, client: &ClientWrapper, key: &str, value: &[u8]) -> PluginResult<i64> {
        let sql = format!(
            "INSERT INTO {} (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = DEFAULT, expires_at = NULL \
             RETURNING version",
            self.kv
        );
        let row = client
            .query_one(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes(), &value])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    /// True when a live key was deleted (an expired row goes too, but did not exist).
    pub async fn delete(&self, client: &ClientWrapper, key: &str) -> PluginResult<bool> {
        let sql = format!("DELETE FROM {} WHERE key = $1 RETURNING {LIVE}", self.kv);
        let row = client
            .query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(row.is_some_and(|row| row.get(0)))
    }

    async fn version(&self, client: &ClientWrapper, key: &str) -> PluginResult<u64> {
        let sql = format!("SELECT version FROM {} WHERE key = $1 AND {LIVE}", self.kv);
        let row = client
            .query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(row.map_or(0, |row| row.get::<_, i64>(0) as u64))
    }
}

impl Postgres {
    fn statements(&self) -> Statements<'_> {
        Statements { kv: &self.sql.kv }
    }
}

impl KeyValueBasic for Postgres {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>> {
        self.statements().get(&*self.client().await?, key).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.statements().set(&*self.client().await?, key, &value).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        self.statements().delete(&*self.client().await?, key).await
    }

    async fn exists(&self, key: &str) -> PluginResult<bool> {
        let client = self.client().await?;
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE key = $1 AND {LIVE})", self.sql.kv);
        let row = client
            .query_one(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }
}

impl KeyValueScan for Postgres {
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        let client = self.client().await?;
        let limit = i64::from(limit.max(1));
        let after: &[u8] = cursor.map_or(&[], str::as_bytes);
        let end = plugin_abi::ranges::prefix_end(prefix.as_bytes());
        let sql = format!(
            "SELECT key, value FROM {} WHERE key >= $1 AND key > $2 AND ($3::bytea IS NULL OR key < $3) \
             AND {LIVE} ORDER BY key LIMIT $4",
            self.sql.kv
        );
        let rows = client
            .query(
                &client.prepare_cached(&sql).await.map_err(db_error)?,
                &[&prefix.as_bytes(), &after, &end, &(limit + 1)],
            )
            .await
            .map_err(db_error)?;
        let more = rows.len() as i64 > limit;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows.into_iter().take(limit as usize) {
            entries.push((text(row.get(0))?, row.get(1)));
        }
        let next_cursor = if more { entries.last().map(|(key, _)| key.clone()) } else { None };
        Ok(ScanPage { entries, next_cursor })
    }

    async fn count(&self, prefix: &str) -> PluginResult<u64> {
        let client = self.client().await?;
        let end = plugin_abi::ranges::prefix_end(prefix.as_bytes());
        let sql = format!(
            "SELECT count(*) FROM {} WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) AND {LIVE}",
            self.sql.kv
        );
        let row = client
            .query_one(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&prefix.as_bytes(), &end])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

impl KeyValueBatch for Postgres {
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>> {
        let client = self.client().await?;
        let wanted: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
        let sql = format!("SELECT key, value FROM {} WHERE key = ANY($1) AND {LIVE}", self.sql.kv);
        let rows = client
            .query(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&wanted])
            .await
            .map_err(db_error)?;
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
        Ok(keys.iter().map(|key| found.get(key.as_bytes()).cloned()).collect())
    }

    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        let client = self.client().await?;
        let statements = self.statements();
        // Issued together on one connection, which pipelines them.
        let writes = entries.iter().map(|(key, value)| statements.set(&client, key, value));
        Ok(join_all(writes).await.into_iter().map(|result| result.map(|_| ())).collect())
    }

    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>> {
        let client = self.client().await?;
        let wanted: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
        let sql = format!("DELETE FROM {} WHERE key = ANY($1) RETURNING key, {LIVE}", self.sql.kv);
        let rows = client
            .query(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&wanted])
            .await
            .map_err(db_error)?;
        let deleted: std::collections::HashSet<Vec<u8>> =
            rows.into_iter().filter(|row| row.get::<_, bool>(1)).map(|row| row.get(0)).collect();
        Ok(keys.iter().map(|key| deleted.contains(key.as_bytes())).collect())
    }
}

impl KeyValueCas for Postgres {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>> {
        let client = self.client().await?;
        let sql = format!("SELECT value, version FROM {} WHERE key = $1 AND {LIVE}", self.sql.kv);
        let row = client
            .query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| Versioned { value: row.get(0), version: row.get::<_, i64>(1) as u64 }))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<std::time::Duration>,
    ) -> PluginResult<CasResult> {
        let client = self.client().await?;
        let ttl_ms: Option<f64> = ttl.map(millis);
        let expiry = format!("CASE WHEN $3::float8 IS NULL THEN NULL ELSE {} END", expiry_at(3));
        let row = if expected_version == 0 {
            // Absent includes a row that has expired but is not reaped yet.
            let sql = format!(
                "INSERT INTO {kv} AS kv (key, value, expires_at) VALUES ($1, $2, {expiry}) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = DEFAULT, expires_at = EXCLUDED.expires_at \
                 WHERE NOT (kv.expires_at IS NULL OR kv.expires_at > clock_timestamp()) RETURNING version",
                kv = self.sql.kv
            );
            client.query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes(), &value, &ttl_ms]).await
        } else {
            let sql = format!(
                "UPDATE {} SET value = $2, version = DEFAULT, expires_at = {expiry} \
                 WHERE key = $1 AND version = $4 AND {LIVE} RETURNING version",
                self.sql.kv
            );
            client.query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes(), &value, &ttl_ms, &(expected_version as i64)]).await
        }
        .map_err(db_error)?;
        Ok(match row {
            Some(row) => CasResult::Swapped { version: row.get::<_, i64>(0) as u64 },
            None => CasResult::Conflict { current_version: self.statements().version(&client, key).await? },
        })
    }

    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {} WHERE key = $1 AND version = $2 AND {LIVE}", self.sql.kv);
        let deleted = client
            .execute(
                &client.prepare_cached(&sql).await.map_err(db_error)?,
                &[&key.as_bytes(), &(expected_version as i64)],
            )
            .await
            .map_err(db_error)?;
        if deleted > 0 {
            return Ok(CasResult::Swapped { version: expected_version });
        }
        let current = self.statements().version(&client, key).await?;
        Ok(if current == expected_version {
            CasResult::Swapped { version: 0 } // expected "absent", and it is
        } else {
            CasResult::Conflict { current_version: current }
        })
    }
}

impl KeyValueTtl for Postgres {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> PluginResult<()> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (key, value, expires_at) VALUES ($1, $2, {}) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = DEFAULT, expires_at = EXCLUDED.expires_at",
            self.sql.kv,
            expiry_at(3)
        );
        client
            .execute(
                &client.prepare_cached(&sql).await.map_err(db_error)?,
                &[&key.as_bytes(), &value, &millis(ttl)],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn expire(&self, key: &str, ttl: std::time::Duration) -> PluginResult<bool> {
        let client = self.client().await?;
        let sql =
            format!("UPDATE {} SET expires_at = {} WHERE key = $1 AND {LIVE}", self.sql.kv, expiry_at(2));
        let updated = client
            .execute(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes(), &millis(ttl)])
            .await
            .map_err(db_error)?;
        Ok(updated > 0)
    }

    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::float8 FROM {} \
             WHERE key = $1 AND {LIVE}",
            self.sql.kv
        );
        let row = client
            .query_opt(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(match row.map(|row| row.get::<_, Option<f64>>(0)) {
            None => KeyTtl::Missing,
            Some(None) => KeyTtl::NoExpiry,
            Some(Some(ms)) => KeyTtl::ExpiresIn(std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        })
    }

    async fn persist(&self, key: &str) -> PluginResult<bool> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {} SET expires_at = NULL WHERE key = $1 AND expires_at IS NOT NULL AND {LIVE}",
            self.sql.kv
        );
        let updated = client
            .execute(&client.prepare_cached(&sql).await.map_err(db_error)?, &[&key.as_bytes()])
            .await
            .map_err(db_error)?;
        Ok(updated > 0)
    }
}

/// Deletes expired rows every `every`, 500 at a time, skipping rows a writer holds, so
/// the reaper never holds a lock for long nor blocks a call.
pub(crate) async fn reap_expired(pool: deadpool_postgres::Pool, kv: String, every: std::time::Duration) {
    const BATCH: u64 = 500;
    let sql = format!(
        "DELETE FROM {kv} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {kv} \
         WHERE expires_at <= clock_timestamp() LIMIT {BATCH} FOR UPDATE SKIP LOCKED))"
    );
    loop {
        tokio::time::sleep(every).await;
        let Ok(client) = pool.get().await else { continue };
        while let Ok(BATCH) = client.execute(sql.as_str(), &[]).await {}
    }
}
