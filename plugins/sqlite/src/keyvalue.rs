//! The key-value interfaces: basic, ttl, scan, batch and cas. A row whose `expires_at`
//! has passed is gone for every read and conditional write at once; the expiry reaper
//! deletes it later. Times are Unix milliseconds, read once per call.

use std::time::Duration;

use plugin_abi::{
    CasResult, KeyTtl, KeyValueBasic, KeyValueBatch, KeyValueCas, KeyValueScan, KeyValueTtl, PluginResult,
    ScanPage, Versioned,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::writer::Batch;
use crate::Sqlite;

/// The condition a row must meet to exist for a reader; `?1` is now. A macro, so the
/// statements that use it are `concat!`ed at compile time, not formatted per call.
macro_rules! live {
    () => {
        "(expires_at IS NULL OR expires_at > ?1)"
    };
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn text(key: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(key).map_err(|e| rusqlite::Error::Utf8Error(0, e.utf8_error()))
}

/// Statements shared by plain calls and transaction commits; writes must run inside a
/// write transaction (for the version counter).
pub(crate) fn get(connection: &Connection, now: i64, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    connection
        .prepare_cached(concat!("SELECT value FROM prism_kv WHERE key = ?2 AND ", live!()))?
        .query_row(params![now, key.as_bytes()], |row| row.get(0))
        .optional()
}

/// The live value of `key` with its version, read together in one statement.
pub(crate) fn get_versioned(
    connection: &Connection,
    now: i64,
    key: &str,
) -> rusqlite::Result<Option<Versioned>> {
    connection
        .prepare_cached(concat!("SELECT value, version FROM prism_kv WHERE key = ?2 AND ", live!()))?
        .query_row(params![now, key.as_bytes()], |row| {
            Ok(Versioned { value: row.get(0)?, version: row.get::<_, i64>(1)? as u64 })
        })
        .optional()
}

/// The live version of `key`; 0 when it is absent.
pub(crate) fn version(connection: &Connection, now: i64, key: &str) -> rusqlite::Result<i64> {
    Ok(connection
        .prepare_cached(concat!("SELECT version FROM prism_kv WHERE key = ?2 AND ", live!()))?
        .query_row(params![now, key.as_bytes()], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

pub(crate) fn set(
    batch: &Batch<'_>,
    key: &str,
    value: &[u8],
    expires_at: Option<i64>,
) -> rusqlite::Result<i64> {
    let version = batch.next_version()?;
    batch
        .prepare_cached(
            "INSERT INTO prism_kv (key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, \
             expires_at = excluded.expires_at",
        )?
        .execute(params![key.as_bytes(), value, version, expires_at])?;
    Ok(version)
}

/// True when a live key was deleted (an expired row goes too, but did not exist).
pub(crate) fn delete(connection: &Connection, now: i64, key: &str) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached(concat!("DELETE FROM prism_kv WHERE key = ?2 RETURNING ", live!()))?
        .query_row(params![now, key.as_bytes()], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

impl KeyValueBasic for Sqlite {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.read_point(move |c, now| get(c, now, &key)).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()> {
        let key = key.to_owned();
        self.write(move |c, _| set(c, &key, &value, None).map(|_| ())).await
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        let key = key.to_owned();
        self.write(move |c, now| delete(c, now, &key)).await
    }

    async fn exists(&self, key: &str) -> PluginResult<bool> {
        let key = key.to_owned();
        self.read_point(move |c, now| Ok(version(c, now, &key)? > 0)).await
    }
}

impl KeyValueScan for Sqlite {
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        let limit = i64::from(limit.max(1));
        let prefix = prefix.as_bytes().to_vec();
        let after = cursor.unwrap_or_default().as_bytes().to_vec();
        self.read(move |c, now| {
            let end = plugin_abi::ranges::prefix_end(&prefix);
            let mut statement = c.prepare_cached(concat!(
                "SELECT key, value FROM prism_kv WHERE key >= ?2 AND key > ?3 AND (?4 IS NULL OR key < ?4) \
                 AND ",
                live!(),
                " ORDER BY key LIMIT ?5"
            ))?;
            let rows = statement.query_map(params![now, prefix, after, end, limit + 1], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
            })?;
            let mut entries = Vec::new();
            let mut more = false;
            for row in rows {
                let (key, value) = row?;
                if entries.len() as i64 == limit {
                    more = true;
                    break;
                }
                entries.push((text(key)?, value));
            }
            let next_cursor = if more { entries.last().map(|(key, _)| key.clone()) } else { None };
            Ok(ScanPage { entries, next_cursor })
        })
        .await
    }

    async fn count(&self, prefix: &str) -> PluginResult<u64> {
        let prefix = prefix.as_bytes().to_vec();
        self.read(move |c, now| {
            let end = plugin_abi::ranges::prefix_end(&prefix);
            c.prepare_cached(concat!(
                "SELECT count(*) FROM prism_kv WHERE key >= ?2 AND (?3 IS NULL OR key < ?3) AND ",
                live!()
            ))?
            .query_row(params![now, prefix, end], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
        })
        .await
    }
}

impl KeyValueBatch for Sqlite {
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>> {
        self.read(move |c, now| keys.iter().map(|key| get(c, now, key)).collect()).await
    }

    /// One transaction for the whole batch: one commit (and one fsync under `full`).
    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        let count = entries.len();
        self.write(move |c, _| {
            for (key, value) in &entries {
                set(c, key, value, None)?;
            }
            Ok(())
        })
        .await?;
        Ok((0..count).map(|_| Ok(())).collect())
    }

    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>> {
        self.write(move |c, now| keys.iter().map(|key| delete(c, now, key)).collect()).await
    }
}

impl KeyValueCas for Sqlite {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>> {
        let key = key.to_owned();
        self.read_point(move |c, now| get_versioned(c, now, &key)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult> {
        let key = key.to_owned();
        self.write(move |c, now| {
            let current = version(c, now, &key)? as u64;
            if current != expected_version {
                return Ok(CasResult::Conflict { current_version: current });
            }
            let expires_at = ttl.map(|ttl| now.saturating_add(millis(ttl)));
            let version = set(c, &key, &value, expires_at)?;
            Ok(CasResult::Swapped { version: version as u64 })
        })
        .await
    }

    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult> {
        let key = key.to_owned();
        self.write(move |c, now| {
            let current = version(c, now, &key)? as u64;
            if current != expected_version {
                return Ok(CasResult::Conflict { current_version: current });
            }
            if current == 0 {
                return Ok(CasResult::Swapped { version: 0 }); // expected "absent", and it is
            }
            delete(c, now, &key)?;
            Ok(CasResult::Swapped { version: expected_version })
        })
        .await
    }
}

impl KeyValueTtl for Sqlite {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()> {
        let key = key.to_owned();
        self.write(move |c, now| set(c, &key, &value, Some(now.saturating_add(millis(ttl)))).map(|_| ()))
            .await
    }

    async fn expire(&self, key: &str, ttl: Duration) -> PluginResult<bool> {
        let key = key.to_owned();
        self.write(move |c, now| {
            c.prepare_cached(concat!("UPDATE prism_kv SET expires_at = ?3 WHERE key = ?2 AND ", live!()))?
                .execute(params![now, key.as_bytes(), now.saturating_add(millis(ttl))])
                .map(|n| n > 0)
        })
        .await
    }

    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl> {
        let key = key.to_owned();
        self.read(move |c, now| {
            let row = c
                .prepare_cached(concat!("SELECT expires_at FROM prism_kv WHERE key = ?2 AND ", live!()))?
                .query_row(params![now, key.as_bytes()], |row| row.get::<_, Option<i64>>(0))
                .optional()?;
            Ok(match row {
                None => KeyTtl::Missing,
                Some(None) => KeyTtl::NoExpiry,
                Some(Some(at)) => KeyTtl::ExpiresIn(Duration::from_millis((at - now).max(0) as u64)),
            })
        })
        .await
    }

    async fn persist(&self, key: &str) -> PluginResult<bool> {
        let key = key.to_owned();
        self.write(move |c, now| {
            c.prepare_cached(concat!(
                "UPDATE prism_kv SET expires_at = NULL WHERE key = ?2 AND expires_at IS NOT NULL AND ",
                live!()
            ))?
            .execute(params![now, key.as_bytes()])
            .map(|n| n > 0)
        })
        .await
    }
}
