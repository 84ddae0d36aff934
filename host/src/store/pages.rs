//! Pages gathered from a plugin's prefix scan for Scan and Enumerate: at most a count,
//! never past the response budget (`server.max_response_bytes`), and — when the caller
//! asks with `max_page_bytes` — at most that many bytes, cut exactly where the next
//! entry would pass it, with a cursor that resumes right after the last entry returned.

use plugin_abi::host::KeyValueScanHandle;
use tonic::Status;

use crate::shared::{plugin_status, MAX_KEY_BYTES};

/// How large one page may grow.
pub struct Limits {
    /// Most items in the page.
    pub count: usize,
    /// Most bytes of the items (their sizes as `keep` counts them); 0 = no bound. A
    /// page always holds at least one item, even one larger than this.
    pub max_bytes: u64,
    /// Most entries to ask the plugin for at once.
    pub plugin_page: usize,
}

/// Scans `prefix` from `cursor`. `keep` turns an entry into an item and its size, or
/// skips it (`None`: a filtered-out registration). Returns the items and the cursor to
/// continue from (`None` at the end).
pub async fn gather<T>(
    scan: &KeyValueScanHandle<'_>,
    prefix: &str,
    mut cursor: Option<String>,
    limits: Limits,
    mut budget: ResponseBudget,
    mut keep: impl FnMut(String, Vec<u8>) -> Option<(T, u64)>,
) -> Result<(Vec<T>, Option<String>), Status> {
    let mut items = Vec::new();
    let mut bytes = 0u64;
    loop {
        // Small enough that even entries of the largest size stay within the budget.
        let wanted = limits.count.saturating_sub(items.len()).min(budget.entries_that_fit());
        let wanted = wanted.clamp(1, limits.plugin_page.max(1)) as u32;
        let page = scan.scan(prefix, cursor.as_deref(), wanted).await.map_err(plugin_status)?;
        let mut kept = Vec::new();
        let mut entries_taken = 0u32;
        let mut cut = false;
        for (key, value) in page.entries {
            budget.spend(key.len() + value.len());
            if let Some((item, size)) = keep(key, value) {
                let first = items.is_empty() && kept.is_empty();
                if limits.max_bytes > 0 && bytes.saturating_add(size) > limits.max_bytes && !first {
                    cut = true;
                    break;
                }
                bytes = bytes.saturating_add(size);
                kept.push(item);
            }
            entries_taken += 1;
        }
        if cut {
            if entries_taken == 0 {
                // Nothing of this plugin page fits: resume where it began.
                return Ok((items, cursor));
            }
            // The plugin's cursor is past entries that did not fit, and plugin cursors
            // are opaque: ask again from the same place for exactly the entries that
            // did, so the cursor lands right after them.
            let again = scan.scan(prefix, cursor.as_deref(), entries_taken).await.map_err(plugin_status)?;
            items.extend(
                again.entries.into_iter().filter_map(|(key, value)| keep(key, value)).map(|(item, _)| item),
            );
            return Ok((items, again.next_cursor));
        }
        items.extend(kept);
        cursor = page.next_cursor;
        if cursor.is_none() || items.len() >= limits.count || budget.entries_that_fit() == 0 {
            return Ok((items, cursor));
        }
    }
}

/// What one response may still carry (`server.max_response_bytes`), counted against
/// the largest entry a plugin could return (`max_value_bytes` plus the longest key).
pub struct ResponseBudget {
    spent: usize,
    limit: usize,
    largest_entry: usize,
}

impl ResponseBudget {
    pub fn new(settings: &crate::config::ServerConfig) -> Self {
        ResponseBudget {
            spent: 0,
            limit: settings.max_response_bytes,
            largest_entry: settings.max_value_bytes + MAX_KEY_BYTES,
        }
    }

    /// How many more entries fit for certain, whatever their size.
    pub fn entries_that_fit(&self) -> usize {
        self.limit.saturating_sub(self.spent) / self.largest_entry
    }

    pub fn spend(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_add(bytes);
    }

    pub fn exceeded(&self) -> bool {
        self.spent > self.limit
    }

    pub fn refusal(&self, call: &str, done: usize, asked: usize) -> Status {
        Status::resource_exhausted(format!(
            "the {call} response would exceed {} bytes (server.max_response_bytes) after {done} of {asked} items; ask for fewer per call",
            self.limit
        ))
    }
}
