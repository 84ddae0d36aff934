use crate::ffi::FfiListEnd;
use crate::ListEnd;

impl From<ListEnd> for FfiListEnd {
    fn from(end: ListEnd) -> Self {
        match end {
            ListEnd::Left => FfiListEnd::Left,
            ListEnd::Right => FfiListEnd::Right,
        }
    }
}

impl From<FfiListEnd> for ListEnd {
    fn from(end: FfiListEnd) -> Self {
        match end {
            FfiListEnd::Left => ListEnd::Left,
            FfiListEnd::Right => ListEnd::Right,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_ends_round_trip() {
        for end in [ListEnd::Left, ListEnd::Right] {
            assert_eq!(ListEnd::from(FfiListEnd::from(end)), end);
        }
    }
}
