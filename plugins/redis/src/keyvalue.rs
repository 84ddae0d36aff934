//! The key-value interfaces on hashes plus a sorted-set index (see the crate docs).

use plugin_abi::PluginResult;
use std::time::Duration;

use crate::connection::Connection;
use futures_util::future::join_all;
use plugin_abi::{
    CasResult, KeyTtl, KeyValueBasic, KeyValueBatch, KeyValueCas, KeyValueScan, KeyValueTtl, ScanPage,
    Versioned,
};
use redis::AsyncCommands;

use crate::errors::plugin_error;
use crate::scripts::{DELETE, WRITE};
use crate::store::KeyNames;
use crate::Redis;

/// Expected version meaning "whatever it is".
const ANY_VERSION: i64 = -1;
/// Index entries read per round trip when scanning or counting.
const CHUNK: usize = 500;

fn expected(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

impl Redis {
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        expected: i64,
    ) -> PluginResult<CasResult> {
        let mut connection = self.connection.clone();
        let ttl_ms = ttl.map_or(0, |ttl| ttl.as_millis().max(1) as u64);
        let (written, version): (i64, u64) = WRITE
            .key(self.keys.value(key))
            .key(&self.keys.index)
            .key(&self.keys.versions)
            .arg(key)
            .arg(value)
            .arg(ttl_ms)
            .arg(expected)
            .invoke_async(&mut connection)
            .await
            .map_err(plugin_error)?;
        Ok(if written == 1 {
            CasResult::Swapped { version }
        } else {
            CasResult::Conflict { current_version: version }
        })
    }

    /// Deletes `key` if its version matches (`ANY_VERSION` always does).
    async fn remove(&self, key: &str, expected: i64) -> PluginResult<CasResult> {
        let mut connection = self.connection.clone();
        let (allowed, before): (i64, u64) = DELETE
            .key(self.keys.value(key))
            .key(&self.keys.index)
            .arg(key)
            .arg(expected)
            .invoke_async(&mut connection)
            .await
            .map_err(plugin_error)?;
        Ok(if allowed == 1 {
            CasResult::Swapped { version: before }
        } else {
            CasResult::Conflict { current_version: before }
        })
    }
}

/// Index entries from `min` (a ZRANGEBYLEX bound) up to the end of `prefix`.
async fn index_chunk(
    connection: &mut Connection,
    keys: &KeyNames,
    min: &[u8],
    prefix: &str,
    count: usize,
) -> PluginResult<Vec<String>> {
    let mut max = b"[".to_vec();
    max.extend_from_slice(prefix.as_bytes());
    max.push(0xff); // no UTF-8 string contains 0xff, so this bounds every key with the prefix
    redis::cmd("ZRANGEBYLEX")
        .arg(&keys.index)
        .arg(min)
        .arg(max)
        .arg("LIMIT")
        .arg(0)
        .arg(count)
        .query_async(connection)
        .await
        .map_err(plugin_error)
}

fn after(key: &str) -> Vec<u8> {
    let mut bound = b"(".to_vec();
    bound.extend_from_slice(key.as_bytes());
    bound
}

/// Drops index entries whose hash has expired.
async fn forget(connection: &mut Connection, keys: &KeyNames, stale: Vec<String>) -> PluginResult<()> {
    if stale.is_empty() {
        return Ok(());
    }
    connection.zrem::<_, _, ()>(&keys.index, stale).await.map_err(plugin_error)
}

/// Periodically walks the whole index and drops entries of expired keys.
pub(crate) async fn sweep_index(mut connection: Connection, keys: KeyNames, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut min = b"[".to_vec();
        loop {
            let Ok(chunk) = index_chunk(&mut connection, &keys, &min, "", CHUNK).await else { break };
            let Some(last) = chunk.last() else { break };
            min = after(last);
            let live = live_flags(&mut connection, &keys, &chunk).await;
            let Ok(live) = live else { break };
            let stale = chunk.iter().zip(live).filter(|(_, live)| !live).map(|(k, _)| k.clone()).collect();
            if forget(&mut connection, &keys, stale).await.is_err() || chunk.len() < CHUNK {
                break;
            }
        }
    }
}

async fn live_flags(
    connection: &mut Connection,
    keys: &KeyNames,
    chunk: &[String],
) -> PluginResult<Vec<bool>> {
    let mut pipe = redis::pipe();
    for key in chunk {
        pipe.exists(keys.value(key));
    }
    pipe.query_async(connection).await.map_err(plugin_error)
}

impl KeyValueBasic for Redis {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        connection.hget(self.keys.value(key), "v").await.map_err(plugin_error)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.write(key, &value, None, ANY_VERSION).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        Ok(matches!(self.remove(key, ANY_VERSION).await?, CasResult::Swapped { version } if version > 0))
    }

    async fn exists(&self, key: &str) -> PluginResult<bool> {
        let mut connection = self.connection.clone();
        connection.exists(self.keys.value(key)).await.map_err(plugin_error)
    }
}

impl KeyValueTtl for Redis {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()> {
        self.write(key, &value, Some(ttl), ANY_VERSION).await.map(|_| ())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> PluginResult<bool> {
        let mut connection = self.connection.clone();
        let millis = ttl.as_millis().max(1) as i64;
        connection.pexpire(self.keys.value(key), millis).await.map_err(plugin_error)
    }

    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl> {
        let mut connection = self.connection.clone();
        let millis: i64 = connection.pttl(self.keys.value(key)).await.map_err(plugin_error)?;
        Ok(match millis {
            -2 => KeyTtl::Missing,
            -1 => KeyTtl::NoExpiry,
            left => KeyTtl::ExpiresIn(Duration::from_millis(left.max(0) as u64)),
        })
    }

    async fn persist(&self, key: &str) -> PluginResult<bool> {
        let mut connection = self.connection.clone();
        connection.persist(self.keys.value(key)).await.map_err(plugin_error)
    }
}

impl KeyValueScan for Redis {
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        let limit = limit.max(1) as usize;
        let mut connection = self.connection.clone();
        let mut min = match cursor {
            Some(cursor) if cursor >= prefix => after(cursor),
            _ => [b"[".as_slice(), prefix.as_bytes()].concat(),
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while entries.len() <= limit {
            let wanted = (limit + 1 - entries.len()).max(16);
            let chunk = index_chunk(&mut connection, &self.keys, &min, prefix, wanted).await?;
            let Some(last) = chunk.last() else { break };
            min = after(last);
            let mut pipe = redis::pipe();
            for key in &chunk {
                pipe.hget(self.keys.value(key), "v");
            }
            let values: Vec<Option<Vec<u8>>> =
                pipe.query_async(&mut connection).await.map_err(plugin_error)?;
            let mut stale = Vec::new();
            let exhausted = chunk.len() < wanted;
            for (key, value) in chunk.into_iter().zip(values) {
                match value {
                    Some(value) => entries.push((key, value)),
                    None => stale.push(key),
                }
            }
            forget(&mut connection, &self.keys, stale).await?;
            if exhausted {
                break;
            }
        }
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more { entries.last().map(|(key, _)| key.clone()) } else { None };
        Ok(ScanPage { entries, next_cursor })
    }

    async fn count(&self, prefix: &str) -> PluginResult<u64> {
        let mut connection = self.connection.clone();
        let mut min = [b"[".as_slice(), prefix.as_bytes()].concat();
        let mut count = 0u64;
        loop {
            let chunk = index_chunk(&mut connection, &self.keys, &min, prefix, CHUNK).await?;
            let Some(last) = chunk.last() else { break };
            min = after(last);
            let live = live_flags(&mut connection, &self.keys, &chunk).await?;
            count += live.iter().filter(|live| **live).count() as u64;
            let exhausted = chunk.len() < CHUNK;
            let stale = chunk.into_iter().zip(live).filter(|(_, live)| !live).map(|(k, _)| k).collect();
            forget(&mut connection, &self.keys, stale).await?;
            if exhausted {
                break;
            }
        }
        Ok(count)
    }
}

impl KeyValueBatch for Redis {
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.hget(self.keys.value(key), "v");
        }
        pipe.query_async(&mut connection).await.map_err(plugin_error)
    }

    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        // Sent together over the multiplexed connection: one round trip's worth of latency.
        let writes = entries.iter().map(|(key, value)| self.write(key, value, None, ANY_VERSION));
        Ok(join_all(writes).await.into_iter().map(|result| result.map(|_| ())).collect())
    }

    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>> {
        let deletes = keys.iter().map(|key| self.remove(key, ANY_VERSION));
        join_all(deletes)
            .await
            .into_iter()
            .map(|result| {
                result.map(|outcome| matches!(outcome, CasResult::Swapped { version } if version > 0))
            })
            .collect()
    }
}

impl KeyValueCas for Redis {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>> {
        let mut connection = self.connection.clone();
        let (value, version): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.value(key))
            .arg("v")
            .arg("n")
            .query_async(&mut connection)
            .await
            .map_err(plugin_error)?;
        Ok(match (value, version) {
            (Some(value), Some(version)) => Some(Versioned { value, version }),
            _ => None,
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult> {
        self.write(key, &value, ttl, expected(expected_version)).await
    }

    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult> {
        self.remove(key, expected(expected_version)).await
    }
}
