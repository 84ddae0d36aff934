//! Range arithmetic every store plugin needs the same way: the end of a key prefix (for
//! a prefix scan as an ordered range) and Redis-style list indexes (for `list_range`).

/// The smallest byte string greater than every string starting with `prefix`, or `None`
/// when there is none (empty prefix, or all 0xff): a prefix scan is `prefix <= key < end`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Resolves inclusive `start`/`stop` indexes (negative counts from the end, as Redis
/// `LRANGE`/`LTRIM`) against a list of `len` items: the half-open range of positions
/// they name, or `None` when it is empty.
pub fn list_range(len: u64, start: i64, stop: i64) -> Option<std::ops::Range<u64>> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { len.saturating_add(start).max(0) } else { start };
    let stop = if stop < 0 { len.saturating_add(stop) } else { stop.min(len - 1) };
    (start <= stop && start < len).then(|| start as u64..stop as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn list_ranges_follow_redis_indexes() {
        assert_eq!(list_range(5, 0, -1), Some(0..5));
        assert_eq!(list_range(5, 1, 2), Some(1..3));
        assert_eq!(list_range(5, -2, -1), Some(3..5));
        assert_eq!(list_range(5, 0, 100), Some(0..5));
        assert_eq!(list_range(5, -100, 0), Some(0..1));
        assert_eq!(list_range(5, 3, 1), None);
        assert_eq!(list_range(5, 5, 10), None);
        assert_eq!(list_range(0, 0, -1), None);
        assert_eq!(list_range(5, i64::MIN, i64::MAX), Some(0..5));
    }
}
