//! The list interfaces: one row per item, ordered by `position`. Pushes on the left take
//! positions below the smallest, on the right above the largest, so neither end moves
//! the other items; an index in a range is a rank, counted with `LIMIT … OFFSET`.

use plugin_abi::{ListBasic, ListEnd, ListRange, PluginResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::Sqlite;

/// The ranks `start..=stop` name in a list of `len` items (see `plugin_abi::ranges`).
fn resolve(len: i64, start: i64, stop: i64) -> Option<std::ops::Range<i64>> {
    plugin_abi::ranges::list_range(len.max(0) as u64, start, stop)
        .map(|range| range.start as i64..range.end as i64)
}

fn length(connection: &Connection, key: &[u8]) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("SELECT count(*) FROM prism_list WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
}

/// The position of the item at rank `offset`.
fn position_at(connection: &Connection, key: &[u8], offset: i64) -> rusqlite::Result<Option<i64>> {
    connection
        .prepare_cached("SELECT position FROM prism_list WHERE key = ?1 ORDER BY position LIMIT 1 OFFSET ?2")?
        .query_row(params![key, offset], |row| row.get(0))
        .optional()
}

impl ListBasic for Sqlite {
    async fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> PluginResult<u64> {
        let key = key.as_bytes().to_vec();
        self.write(move |c, _| {
            let (edge, step): (Option<i64>, i64) = match end {
                ListEnd::Left => (
                    c.query_row("SELECT min(position) FROM prism_list WHERE key = ?1", [&key], |r| r.get(0))?,
                    -1,
                ),
                ListEnd::Right => (
                    c.query_row("SELECT max(position) FROM prism_list WHERE key = ?1", [&key], |r| r.get(0))?,
                    1,
                ),
            };
            let mut position = edge.unwrap_or(0);
            if edge.is_none() {
                position -= step; // the first item lands on 0
            }
            let mut insert =
                c.prepare_cached("INSERT INTO prism_list (key, position, value) VALUES (?1, ?2, ?3)")?;
            for value in &values {
                position += step;
                insert.execute(params![key, position, value])?;
            }
            Ok(length(c, &key)? as u64)
        })
        .await
    }

    async fn pop(&self, key: &str, end: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>> {
        let key = key.as_bytes().to_vec();
        self.write(move |c, _| {
            let from_the_end = match end {
                ListEnd::Left => {
                    "SELECT position, value FROM prism_list WHERE key = ?1 ORDER BY position ASC LIMIT ?2"
                }
                ListEnd::Right => {
                    "SELECT position, value FROM prism_list WHERE key = ?1 ORDER BY position DESC LIMIT ?2"
                }
            };
            let popped: Vec<(i64, Vec<u8>)> = c
                .prepare_cached(from_the_end)?
                .query_map(params![key, i64::from(count)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            if let (Some((first, _)), Some((last, _))) = (popped.first(), popped.last()) {
                c.prepare_cached("DELETE FROM prism_list WHERE key = ?1 AND position BETWEEN ?2 AND ?3")?
                    .execute(params![key, (*first).min(*last), (*first).max(*last)])?;
            }
            Ok(popped.into_iter().map(|(_, value)| value).collect())
        })
        .await
    }

    async fn length(&self, key: &str) -> PluginResult<u64> {
        let key = key.as_bytes().to_vec();
        self.read(move |c, _| length(c, &key).map(|n| n as u64)).await
    }
}

impl ListRange for Sqlite {
    async fn range(&self, key: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>> {
        let key = key.as_bytes().to_vec();
        // One read transaction, so the length and the page come from the same list.
        self.read_snapshot(move |c, _| {
            let Some(range) = resolve(length(c, &key)?, start, stop) else { return Ok(Vec::new()) };
            c.prepare_cached(
                "SELECT value FROM prism_list WHERE key = ?1 ORDER BY position LIMIT ?2 OFFSET ?3",
            )?
            .query_map(params![key, range.end - range.start, range.start], |row| row.get(0))?
            .collect()
        })
        .await
    }

    async fn trim(&self, key: &str, start: i64, stop: i64) -> PluginResult<()> {
        let key = key.as_bytes().to_vec();
        self.write(move |c, _| {
            let Some(range) = resolve(length(c, &key)?, start, stop) else {
                c.execute("DELETE FROM prism_list WHERE key = ?1", [&key])?;
                return Ok(());
            };
            let first = position_at(c, &key, range.start)?;
            let last = position_at(c, &key, range.end - 1)?;
            if let (Some(first), Some(last)) = (first, last) {
                c.prepare_cached(
                    "DELETE FROM prism_list WHERE key = ?1 AND (position < ?2 OR position > ?3)",
                )?
                .execute(params![key, first, last])?;
            }
            Ok(())
        })
        .await
    }
}
