use std::time::Duration;

use abi_stable::std_types::RString;

use crate::ffi::{FfiCas, FfiEntry, FfiScanPage, FfiTtl, FfiTtlKind, FfiVersioned};
use crate::{CasResult, KeyTtl, ScanPage, Versioned};

impl From<(String, Vec<u8>)> for FfiEntry {
    fn from((key, value): (String, Vec<u8>)) -> Self {
        FfiEntry { key: key.into(), value: value.into() }
    }
}

impl From<FfiEntry> for (String, Vec<u8>) {
    fn from(entry: FfiEntry) -> Self {
        (entry.key.into_string(), entry.value.into_vec())
    }
}

impl From<ScanPage> for FfiScanPage {
    fn from(page: ScanPage) -> Self {
        FfiScanPage {
            entries: page.entries.into_iter().map(FfiEntry::from).collect(),
            next_cursor: page.next_cursor.map(RString::from).into(),
        }
    }
}

impl From<FfiScanPage> for ScanPage {
    fn from(page: FfiScanPage) -> Self {
        ScanPage {
            entries: page.entries.into_iter().map(<(String, Vec<u8>)>::from).collect(),
            next_cursor: page.next_cursor.into_option().map(RString::into_string),
        }
    }
}

impl From<KeyTtl> for FfiTtl {
    fn from(ttl: KeyTtl) -> Self {
        match ttl {
            KeyTtl::Missing => FfiTtl { kind: FfiTtlKind::Missing, millis: 0 },
            KeyTtl::NoExpiry => FfiTtl { kind: FfiTtlKind::NoExpiry, millis: 0 },
            KeyTtl::ExpiresIn(left) => FfiTtl {
                kind: FfiTtlKind::ExpiresIn,
                millis: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

impl From<FfiTtl> for KeyTtl {
    fn from(ttl: FfiTtl) -> Self {
        match ttl.kind {
            FfiTtlKind::Missing => KeyTtl::Missing,
            FfiTtlKind::NoExpiry => KeyTtl::NoExpiry,
            FfiTtlKind::ExpiresIn => KeyTtl::ExpiresIn(Duration::from_millis(ttl.millis)),
        }
    }
}

impl From<Versioned> for FfiVersioned {
    fn from(versioned: Versioned) -> Self {
        FfiVersioned { value: versioned.value.into(), version: versioned.version }
    }
}

impl From<FfiVersioned> for Versioned {
    fn from(versioned: FfiVersioned) -> Self {
        Versioned { value: versioned.value.into_vec(), version: versioned.version }
    }
}

impl From<CasResult> for FfiCas {
    fn from(result: CasResult) -> Self {
        match result {
            CasResult::Swapped { version } => FfiCas { swapped: true, version },
            CasResult::Conflict { current_version } => FfiCas { swapped: false, version: current_version },
        }
    }
}

impl From<FfiCas> for CasResult {
    fn from(result: FfiCas) -> Self {
        if result.swapped {
            CasResult::Swapped { version: result.version }
        } else {
            CasResult::Conflict { current_version: result.version }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyvalue_types_round_trip() {
        let page = ScanPage {
            entries: vec![("a".into(), b"1".to_vec()), ("b".into(), Vec::new())],
            next_cursor: Some("b".into()),
        };
        assert_eq!(ScanPage::from(FfiScanPage::from(page.clone())), page);
        let last = ScanPage { entries: Vec::new(), next_cursor: None };
        assert_eq!(ScanPage::from(FfiScanPage::from(last.clone())), last);
        for ttl in [KeyTtl::Missing, KeyTtl::NoExpiry, KeyTtl::ExpiresIn(Duration::from_millis(1500))] {
            assert_eq!(KeyTtl::from(FfiTtl::from(ttl)), ttl);
        }
        let versioned = Versioned { value: b"v".to_vec(), version: 7 };
        assert_eq!(Versioned::from(FfiVersioned::from(versioned.clone())), versioned);
        for cas in [CasResult::Swapped { version: 3 }, CasResult::Conflict { current_version: 9 }] {
            assert_eq!(CasResult::from(FfiCas::from(cas)), cas);
        }
    }
}
