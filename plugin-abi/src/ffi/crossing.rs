//! How each plain type crosses the boundary: one impl per type, which the code generated
//! from every interface declaration calls (`plugin-abi-macros` spells the FFI type; these
//! impls say how to get there and back, so the two cannot disagree and still compile).
//!
//! - [`Crossing`]: values that are the same on both sides (arguments and most results).
//! - [`Returned`]: results, which may also be feeds pumped on the plugin's runtime.
//! - [`AssocIntoFfi`], [`AssocFromFfi`], [`Erase`]: a driver's associated type (an upload)
//!   into its FFI object, and the host's type-erased form of it from either side.

use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{ROption, RResult, RString, RVec};

use super::bridge::PluginRuntime;
use super::*;
use crate::{
    Appended, CasResult, DeadLetterPage, Feed, GroupEvent, KeyTtl, ListEnd, Message, NewRecord, ObjectEntry,
    ObjectInfo, ObjectRead, PartitionOffsets, PluginError, PluginResult, QueueMessage, ScanPage,
    StreamRecord, TransactionId, Versioned,
};

/// A plain type and its FFI form, both ways.
pub(crate) trait Crossing: Sized {
    type Ffi;
    fn into_ffi(self) -> Self::Ffi;
    fn from_ffi(ffi: Self::Ffi) -> Self;
}

macro_rules! identical {
    ($($type:ty),*) => {$(
        impl Crossing for $type {
            type Ffi = $type;
            fn into_ffi(self) -> Self { self }
            fn from_ffi(ffi: Self) -> Self { ffi }
        }
    )*};
}

identical!((), bool, u32, u64, i64);

/// Types whose FFI form has a `From` pair (ffi/convert).
macro_rules! by_from {
    ($($plain:ty => $ffi:ty),* $(,)?) => {$(
        impl Crossing for $plain {
            type Ffi = $ffi;
            fn into_ffi(self) -> $ffi { self.into() }
            fn from_ffi(ffi: $ffi) -> Self { ffi.into() }
        }
    )*};
}

by_from!(
    String => RString,
    Vec<u8> => RVec<u8>,
    ScanPage => FfiScanPage,
    KeyTtl => FfiTtl,
    Versioned => FfiVersioned,
    CasResult => FfiCas,
    ListEnd => FfiListEnd,
    QueueMessage => FfiQueueMessage,
    DeadLetterPage => FfiDeadLetterPage,
    NewRecord => FfiNewRecord,
    Appended => FfiAppended,
    PartitionOffsets => FfiPartitionOffsets,
    ObjectInfo => FfiObjectInfo,
    ObjectEntry => FfiObjectEntry,
    (String, Vec<u8>) => FfiEntry,
);

impl Crossing for (String, String) {
    type Ffi = FfiHeader;
    fn into_ffi(self) -> FfiHeader {
        FfiHeader { name: self.0.into(), value: self.1.into() }
    }
    fn from_ffi(ffi: FfiHeader) -> Self {
        (ffi.name.into_string(), ffi.value.into_string())
    }
}

/// A committed position: `(partition, next offset)`.
impl Crossing for (u32, Option<u64>) {
    type Ffi = FfiCommitted;
    fn into_ffi(self) -> FfiCommitted {
        FfiCommitted { partition: self.0, offset: self.1.into() }
    }
    fn from_ffi(ffi: FfiCommitted) -> Self {
        (ffi.partition, ffi.offset.into_option())
    }
}

impl Crossing for TransactionId {
    type Ffi = u64;
    fn into_ffi(self) -> u64 {
        self.0
    }
    fn from_ffi(ffi: u64) -> Self {
        TransactionId(ffi)
    }
}

/// Milliseconds, rounded up: a sub-millisecond TTL or wait must not become "none".
impl Crossing for Duration {
    type Ffi = u64;
    fn into_ffi(self) -> u64 {
        let millis = u64::try_from(self.as_millis()).unwrap_or(u64::MAX);
        if self > Duration::from_millis(millis) {
            millis.saturating_add(1)
        } else {
            millis
        }
    }
    fn from_ffi(ffi: u64) -> Self {
        Duration::from_millis(ffi)
    }
}

/// An optional duration is 0 when absent; a present one is at least 1 ms.
impl Crossing for Option<Duration> {
    type Ffi = u64;
    fn into_ffi(self) -> u64 {
        self.map(|duration| Crossing::into_ffi(duration).max(1)).unwrap_or(0)
    }
    fn from_ffi(ffi: u64) -> Self {
        (ffi > 0).then(|| Duration::from_millis(ffi))
    }
}

macro_rules! optional {
    ($($type:ty),*) => {$(
        impl Crossing for Option<$type> {
            type Ffi = ROption<<$type as Crossing>::Ffi>;
            fn into_ffi(self) -> Self::Ffi { self.map(Crossing::into_ffi).into() }
            fn from_ffi(ffi: Self::Ffi) -> Self { ffi.into_option().map(Crossing::from_ffi) }
        }
    )*};
}

optional!(Vec<u8>, Versioned, ObjectInfo, String);

/// Lists cross element by element (`Vec<u8>` is a value of its own, moved whole).
macro_rules! list {
    ($($type:ty),*) => {$(
        impl Crossing for Vec<$type> {
            type Ffi = RVec<<$type as Crossing>::Ffi>;
            fn into_ffi(self) -> Self::Ffi { self.into_iter().map(Crossing::into_ffi).collect() }
            fn from_ffi(ffi: Self::Ffi) -> Self { ffi.into_iter().map(Crossing::from_ffi).collect() }
        }
    )*};
}

list!(
    bool,
    ObjectEntry,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    PluginResult<()>,
    QueueMessage,
    PartitionOffsets,
    (String, Vec<u8>),
    (String, String),
    (u32, Option<u64>)
);

impl Crossing for PluginResult<()> {
    type Ffi = RResult<(), PluginError>;
    fn into_ffi(self) -> Self::Ffi {
        self.into()
    }
    fn from_ffi(ffi: Self::Ffi) -> Self {
        ffi.into_result()
    }
}

/// A result, into its FFI form on the plugin's runtime (feeds are pumped there) and back.
pub(crate) trait Returned: Sized {
    type Ffi;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> Self::Ffi;
    fn from_ffi(ffi: Self::Ffi) -> Self;
}

impl<T: Crossing> Returned for T {
    type Ffi = T::Ffi;
    fn into_ffi(self, _: &Arc<PluginRuntime>) -> T::Ffi {
        Crossing::into_ffi(self)
    }
    fn from_ffi(ffi: T::Ffi) -> Self {
        Crossing::from_ffi(ffi)
    }
}

impl Returned for Feed<Message> {
    type Ffi = MessageStreamBox;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> MessageStreamBox {
        stream::message_stream(runtime, move |sender| stream::forward(self, FfiMessage::from, sender))
    }
    fn from_ffi(ffi: MessageStreamBox) -> Self {
        stream::feed_of_messages(ffi)
    }
}

impl Returned for Feed<StreamRecord> {
    type Ffi = EventStreamBox;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> EventStreamBox {
        let record = |record: StreamRecord| FfiStreamEvent::Record(record.into());
        stream::event_stream(runtime, move |sender| stream::forward(self, record, sender))
    }
    fn from_ffi(ffi: EventStreamBox) -> Self {
        stream::feed_of_records(ffi)
    }
}

impl Returned for Feed<GroupEvent> {
    type Ffi = EventStreamBox;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> EventStreamBox {
        stream::event_stream(runtime, move |sender| stream::forward(self, FfiStreamEvent::from, sender))
    }
    fn from_ffi(ffi: EventStreamBox) -> Self {
        stream::feed_of_events(ffi)
    }
}

impl Returned for Feed<(String, Vec<u8>)> {
    type Ffi = EntryStreamBox;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> EntryStreamBox {
        stream::entry_stream(runtime, move |sender| stream::forward(self, FfiEntry::from, sender))
    }
    fn from_ffi(ffi: EntryStreamBox) -> Self {
        stream::feed_of_entries(ffi)
    }
}

impl Returned for Option<ObjectRead> {
    type Ffi = ROption<FfiObjectRead>;
    fn into_ffi(self, runtime: &Arc<PluginRuntime>) -> Self::Ffi {
        self.map(|read| FfiObjectRead {
            info: read.info.into(),
            chunks: stream::chunk_stream(runtime, move |sender| {
                stream::forward(read.chunks, RVec::from, sender)
            }),
        })
        .into()
    }
    fn from_ffi(ffi: Self::Ffi) -> Self {
        ffi.into_option()
            .map(|read| ObjectRead { info: read.info.into(), chunks: stream::feed_of_chunks(read.chunks) })
    }
}

/// A driver's associated type (what `#[crossing(ffi = …)]` names) into its FFI object.
pub(crate) trait AssocIntoFfi<Ffi> {
    fn assoc_into_ffi(self, runtime: &Arc<PluginRuntime>) -> Ffi;
}

impl<U: crate::ObjectUpload> AssocIntoFfi<ObjectUploadBox> for U {
    fn assoc_into_ffi(self, runtime: &Arc<PluginRuntime>) -> ObjectUploadBox {
        upload::object_upload(runtime, self)
    }
}

/// The host's type-erased form of a driver's associated type (what
/// `#[crossing(erased = …)]` names), from its FFI object…
pub(crate) trait AssocFromFfi<Ffi> {
    fn assoc_from_ffi(ffi: Ffi) -> Self;
}

/// …or from a driver built into the host.
pub(crate) trait Erase<U> {
    fn erase(value: U) -> Self;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Crossing + Clone + PartialEq + std::fmt::Debug>(value: T) {
        assert_eq!(T::from_ffi(value.clone().into_ffi()), value);
    }

    #[test]
    fn plain_values_cross_and_come_back_unchanged() {
        round_trip(vec![Some(b"v".to_vec()), None]);
        round_trip(vec![("k".to_owned(), b"v".to_vec())]);
        round_trip(vec![("name".to_owned(), "value".to_owned())]);
        round_trip(vec![(3u32, Some(7u64)), (4, None)]);
        round_trip(vec![Ok(()), Err(PluginError::not_found("gone"))]);
        round_trip(TransactionId(42));
        round_trip(Some(Duration::from_millis(1500)));
        round_trip(None::<Duration>);
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds_and_a_present_one_is_never_zero() {
        assert_eq!(Crossing::into_ffi(Duration::from_micros(1500)), 2);
        assert_eq!(Crossing::into_ffi(Duration::from_millis(7)), 7);
        assert_eq!(Crossing::into_ffi(Duration::ZERO), 0);
        assert_eq!(Crossing::into_ffi(Some(Duration::ZERO)), 1);
        assert_eq!(Crossing::into_ffi(Some(Duration::from_nanos(1))), 1);
        assert_eq!(Crossing::into_ffi(None::<Duration>), 0);
    }
}
