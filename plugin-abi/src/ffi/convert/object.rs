use crate::ffi::FfiObjectInfo;
use crate::ObjectInfo;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_info_round_trips() {
        let info = ObjectInfo { size: 5 << 30, modified_unix_ms: 1_790_000_000_123 };
        assert_eq!(ObjectInfo::from(FfiObjectInfo::from(info)), info);
    }
}
