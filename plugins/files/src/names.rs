//! Object keys as file names: one file per key, directly in the directory.

use sha2::{Digest, Sha256};

/// Longest encoded name kept readable; longer keys are named by their hash.
const MAX_READABLE: usize = 200;

/// Letters, digits, `-` and `_` stay; every other byte is `%XX` (`.` too, so no name is
/// `.`, `..` or hidden, and `/` too, so a key never leaves the directory). Names past
/// `MAX_READABLE` bytes become `~` and the key's SHA-256, within any file system's limit.
pub fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    if name.len() > MAX_READABLE {
        return format!("~{}", hex::encode(Sha256::digest(key.as_bytes())));
    }
    name
}

/// Temporary files of uploads in progress start with this, which no object name does.
pub const TEMPORARY: &str = ".upload-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_safe_and_short() {
        let keys = ["a/b", "a%2Fb", "a_2Fb", "..", ".", "a b", "Ключ", "a/b/"];
        let names: std::collections::HashSet<String> = keys.iter().map(|key| file_name(key)).collect();
        assert_eq!(names.len(), keys.len(), "{names:?}");
        for name in &names {
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        }
        let long = "k".repeat(1024);
        assert!(file_name(&long).len() <= 65);
        assert_ne!(file_name(&long), file_name(&"k".repeat(1023)));
    }
}
