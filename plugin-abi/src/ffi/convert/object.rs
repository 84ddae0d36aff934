use crate::ffi::{FfiObjectEntry, FfiObjectInfo};
use crate::{ObjectEntry, ObjectInfo};

impl From<ObjectInfo> for FfiObjectInfo {
    fn from(info: ObjectInfo) -> Self {
        FfiObjectInfo { size: info.size, modified_unix_ms: info.modified_unix_ms }
    }
}

impl From<FfiObjectInfo> for ObjectInfo {
    fn from(info: FfiObjectInfo) -> Self {
        ObjectInfo { size: info.size, modified_unix_ms: info.modified_unix_ms }
    }
}

impl From<ObjectEntry> for FfiObjectEntry {
    fn from(entry: ObjectEntry) -> Self {
        FfiObjectEntry { key: entry.key.into(), info: entry.info.into() }
    }
}

impl From<FfiObjectEntry> for ObjectEntry {
    fn from(entry: FfiObjectEntry) -> Self {
        ObjectEntry { key: entry.key.into_string(), info: entry.info.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_info_round_trips() {
        let info = ObjectInfo { size: 5 << 30, modified_unix_ms: 1_790_000_000_123 };
        assert_eq!(ObjectInfo::from(FfiObjectInfo::from(info)), info);
        let entry = ObjectEntry { key: "ns/Ключ".into(), info };
        assert_eq!(ObjectEntry::from(FfiObjectEntry::from(entry.clone())), entry);
    }
}
