//! Object keys as file names: one file per key, directly in the directory.

use sha2::{Digest, Sha256};

/// Longest encoded name kept readable; longer keys are named by their hash.
const MAX_READABLE: usize = 200;

/// Letters, digits, `-` and `_` stay; every other byte is `%XX` (`.` too, so no name is
/// `.`, `..` or hidden, and `/` too, so a key never leaves the directory). Names past
/// `MAX_READABLE` bytes become `~` and the key's SHA-256, within any file system's limit.
pub fn file_name(key: &str) -> String {
    let name = encoded(key);
    if name.len() > MAX_READABLE {
        return format!("{HASHED}{}", hex::encode(Sha256::digest(key.as_bytes())));
    }
    name
}

/// `key` with every byte but letters, digits, `-` and `_` as `%XX`; a key's encoding
/// starts with its prefix's, which lets a listing skip other names undecoded.
pub fn encoded(key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name
}

/// What a file name says of its object's key, for a listing.
pub enum Named {
    /// A readable name: the key it encodes.
    Key(String),
    /// A name that is the key's hash: the key is in the file of this name beside it.
    InKeyFile(String),
    /// Not an object: an upload in progress, a key file, a file someone else put there.
    NotAnObject,
}

pub fn named(name: &str) -> Named {
    if name.starts_with(TEMPORARY) || name.ends_with(KEY_FILE) {
        return Named::NotAnObject;
    }
    if name.starts_with(HASHED) {
        return Named::InKeyFile(format!("{name}{KEY_FILE}"));
    }
    match decoded(name) {
        Some(key) if encoded(&key) == name => Named::Key(key),
        _ => Named::NotAnObject,
    }
}

/// The file holding the key of an object whose name is a hash, when `key`'s is.
pub fn key_file(key: &str) -> Option<String> {
    let name = file_name(key);
    name.starts_with(HASHED).then(|| format!("{name}{KEY_FILE}"))
}

fn decoded(name: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut rest = name.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Temporary files of uploads in progress start with this, which no object name does.
pub const TEMPORARY: &str = ".upload-";
/// What a hashed name starts with; no readable name does (`~` is encoded).
const HASHED: &str = "~";
/// What the file holding a hashed name's key adds to that name; `.` is encoded in
/// readable names, so no object is named so.
const KEY_FILE: &str = ".key";

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
        for key in keys {
            assert!(matches!(named(&file_name(key)), Named::Key(decoded) if decoded == key), "{key}");
        }
        let long = "k".repeat(1024);
        assert!(matches!(named(&file_name(&long)), Named::InKeyFile(_)));
        assert!(matches!(named(&key_file(&long).unwrap()), Named::NotAnObject));
        assert!(matches!(named("%2"), Named::NotAnObject));
        assert!(matches!(named("a%2fb"), Named::NotAnObject), "not how this plugin writes '/'");
        assert!(file_name(&long).len() <= 65);
        assert_ne!(file_name(&long), file_name(&"k".repeat(1023)));
    }
}
