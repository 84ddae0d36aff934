//! Streams across the boundary: the plugin pumps items into a bounded channel from a
//! task on its own runtime (so a slow reader applies backpressure), and the host pulls
//! them one `next()` future at a time. Dropping the stream aborts the pump task.

use std::sync::Arc;

use abi_stable::{
    sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, ROk, ROption, RResult, RVec},
};
use tokio::sync::{mpsc, Mutex};

use super::bridge::{bridge, CatchPanic, PluginRuntime};
use super::{FfiEntry, FfiMessage, FfiResult, FfiStreamEvent};
use crate::{Feed, GroupEvent, Message, PluginError, StreamRecord};

/// How many items a plugin may produce ahead of the host's reader.
pub const STREAM_BUFFER: usize = 64;

#[sabi_trait]
pub trait FfiEntryStream: Send + Sync {
    /// The next item; `RNone` when the stream has ended.
    #[sabi(last_prefix_field)]
    fn next(&self) -> FfiResult<ROption<FfiEntry>>;
}

pub(crate) type EntryStreamBox = FfiEntryStream_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait FfiMessageStream: Send + Sync {
    /// The messages waiting, at least one and at most `max` (waiting for the first);
    /// empty when the subscription has ended. One call per batch, not per message.
    #[sabi(last_prefix_field)]
    fn next_batch(&self, max: u32) -> FfiResult<RVec<FfiMessage>>;
}

pub(crate) type MessageStreamBox = FfiMessageStream_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait FfiEventStream: Send + Sync {
    /// Like `FfiMessageStream::next_batch`, for stream records and group events.
    #[sabi(last_prefix_field)]
    fn next_batch(&self, max: u32) -> FfiResult<RVec<FfiStreamEvent>>;
}

pub(crate) type EventStreamBox = FfiEventStream_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait FfiChunkStream: Send + Sync {
    /// 1.2: the next chunk of an object being read; `RNone` once all were handed over.
    #[sabi(last_prefix_field)]
    fn next(&self) -> FfiResult<ROption<RVec<u8>>>;
}

pub(crate) type ChunkStreamBox = FfiChunkStream_TO<'static, RBox<()>>;

/// How many chunks of an object a plugin may read ahead of the host. Chunks can be a
/// MiB each, so this stays small: a read's memory is bounded by it, whatever the size.
pub const CHUNK_BUFFER: usize = 4;

type Item<T> = Result<T, PluginError>;

/// What the host reads from: the channel, and an error found while batching that must
/// wait until the items before it have been handed over.
struct Inbox<T> {
    receiver: mpsc::Receiver<Item<T>>,
    pending_error: Option<PluginError>,
}

/// The plugin-side end of a stream: the receiving half plus the pump task to cancel.
struct ChannelStream<T> {
    receiver: Arc<Mutex<Inbox<T>>>,
    pump: tokio::task::AbortHandle,
    runtime: Arc<PluginRuntime>,
}

impl<T> Drop for ChannelStream<T> {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl<T: Send + 'static> ChannelStream<T>
where
    RResult<ROption<T>, PluginError>: super::bridge::FromPanic,
{
    fn next_item(&self) -> FfiResult<ROption<T>> {
        let receiver = self.receiver.clone();
        bridge(&self.runtime, async move {
            let mut inbox = receiver.lock().await;
            if let Some(error) = inbox.pending_error.take() {
                return RResult::RErr(error);
            }
            match inbox.receiver.recv().await {
                Some(Ok(item)) => ROk(ROption::RSome(item)),
                Some(Err(error)) => RResult::RErr(error),
                None => ROk(ROption::RNone),
            }
        })
    }
}

impl FfiEntryStream for ChannelStream<FfiEntry> {
    fn next(&self) -> FfiResult<ROption<FfiEntry>> {
        self.next_item()
    }
}

impl FfiChunkStream for ChannelStream<RVec<u8>> {
    fn next(&self) -> FfiResult<ROption<RVec<u8>>> {
        self.next_item()
    }
}

impl<T: Send + 'static> ChannelStream<T>
where
    RResult<RVec<T>, PluginError>: super::bridge::FromPanic,
{
    fn next_items(&self, max: u32) -> FfiResult<RVec<T>> {
        let receiver = self.receiver.clone();
        bridge(&self.runtime, async move {
            let mut inbox = receiver.lock().await;
            if let Some(error) = inbox.pending_error.take() {
                return RResult::RErr(error);
            }
            let mut batch = RVec::new();
            match inbox.receiver.recv().await {
                Some(Ok(item)) => batch.push(item),
                Some(Err(error)) => return RResult::RErr(error),
                None => return ROk(batch),
            }
            while batch.len() < max.max(1) as usize {
                match inbox.receiver.try_recv() {
                    Ok(Ok(item)) => batch.push(item),
                    // An error waits for the next call, after what came before it.
                    Ok(Err(error)) => {
                        inbox.pending_error = Some(error);
                        break;
                    }
                    Err(_) => break,
                }
            }
            ROk(batch)
        })
    }
}

impl FfiMessageStream for ChannelStream<FfiMessage> {
    fn next_batch(&self, max: u32) -> FfiResult<RVec<FfiMessage>> {
        self.next_items(max)
    }
}

impl FfiEventStream for ChannelStream<FfiStreamEvent> {
    fn next_batch(&self, max: u32) -> FfiResult<RVec<FfiStreamEvent>> {
        self.next_items(max)
    }
}

/// Starts `pump` on the plugin runtime, feeding a bounded channel, and returns the
/// plugin-side end the host reads. `pump` should stop when `send` fails (reader gone).
fn channel_stream<T, P, F>(runtime: &Arc<PluginRuntime>, capacity: usize, pump: P) -> ChannelStream<T>
where
    T: Send + 'static,
    P: FnOnce(mpsc::Sender<Item<T>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(capacity);
    let panic_sender = sender.clone();
    let pump = pump(sender);
    let task = runtime.handle().spawn(async move {
        if let Err(message) = CatchPanic::new(pump).await {
            let _ = panic_sender.send(Err(PluginError::internal(message))).await;
        }
    });
    ChannelStream {
        receiver: Arc::new(Mutex::new(Inbox { receiver, pending_error: None })),
        pump: task.abort_handle(),
        runtime: runtime.clone(),
    }
}

pub(crate) fn entry_stream<P, F>(runtime: &Arc<PluginRuntime>, pump: P) -> EntryStreamBox
where
    P: FnOnce(mpsc::Sender<Item<FfiEntry>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    FfiEntryStream_TO::from_value(channel_stream(runtime, STREAM_BUFFER, pump), TD_Opaque)
}

pub(crate) fn message_stream<P, F>(runtime: &Arc<PluginRuntime>, pump: P) -> MessageStreamBox
where
    P: FnOnce(mpsc::Sender<Item<FfiMessage>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    FfiMessageStream_TO::from_value(channel_stream(runtime, STREAM_BUFFER, pump), TD_Opaque)
}

pub(crate) fn event_stream<P, F>(runtime: &Arc<PluginRuntime>, pump: P) -> EventStreamBox
where
    P: FnOnce(mpsc::Sender<Item<FfiStreamEvent>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    FfiEventStream_TO::from_value(channel_stream(runtime, STREAM_BUFFER, pump), TD_Opaque)
}

pub(crate) fn chunk_stream<P, F>(runtime: &Arc<PluginRuntime>, pump: P) -> ChunkStreamBox
where
    P: FnOnce(mpsc::Sender<Item<RVec<u8>>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    FfiChunkStream_TO::from_value(channel_stream(runtime, CHUNK_BUFFER, pump), TD_Opaque)
}

/// Forwards a plugin feed, converted, into the bounded channel the host reads; stops at
/// the first error, or when the host drops its end (which drops the feed, cancelling it
/// in the backend).
pub(crate) async fn forward<T: Send + 'static, U>(
    mut feed: Feed<T>,
    convert: impl Fn(T) -> U,
    sender: mpsc::Sender<Item<U>>,
) {
    while let Some(item) = feed.next().await {
        let failed = item.is_err();
        if sender.send(item.map(&convert)).await.is_err() || failed {
            return;
        }
    }
}

/// The host's end of a plugin's stream as a `Feed`: one FFI call per batch (`fetch`; an
/// empty batch is the end), its items handed out from a buffer. `convert` may drop an
/// item (a read's feed carries records only). An error ends the feed.
fn feed_from_batches<F, T, Fetched>(
    mut fetch: impl FnMut() -> Fetched + Send + 'static,
    convert: fn(F) -> Option<T>,
) -> Feed<T>
where
    F: Send + 'static,
    T: Send + 'static,
    Fetched: std::future::Future<Output = RResult<RVec<F>, PluginError>> + Send + 'static,
{
    use std::task::Poll;
    let mut buffered = std::collections::VecDeque::new();
    let mut pending: Option<std::pin::Pin<Box<Fetched>>> = None;
    let mut ended = false;
    Feed::new(crate::types::futures_core_stream(move |cx| loop {
        if let Some(item) = buffered.pop_front() {
            return Poll::Ready(Some(Ok(item)));
        }
        if ended {
            return Poll::Ready(None);
        }
        let future = pending.get_or_insert_with(|| Box::pin(fetch()));
        let result = std::task::ready!(std::future::Future::poll(future.as_mut(), cx));
        pending = None;
        match result {
            ROk(batch) if batch.is_empty() => ended = true,
            ROk(batch) => buffered.extend(batch.into_iter().filter_map(convert)),
            RResult::RErr(error) => {
                ended = true;
                return Poll::Ready(Some(Err(error)));
            }
        }
    }))
}

pub(crate) fn feed_of_messages(stream: MessageStreamBox) -> Feed<Message> {
    feed_from_batches(move || stream.next_batch(STREAM_BUFFER as u32), |m| Some(Message::from(m)))
}

pub(crate) fn feed_of_records(stream: EventStreamBox) -> Feed<StreamRecord> {
    feed_from_batches(
        move || stream.next_batch(STREAM_BUFFER as u32),
        |event| match event {
            FfiStreamEvent::Record(record) => Some(record.into()),
            FfiStreamEvent::Assigned(_) => None,
        },
    )
}

pub(crate) fn feed_of_events(stream: EventStreamBox) -> Feed<GroupEvent> {
    feed_from_batches(move || stream.next_batch(STREAM_BUFFER as u32), |e| Some(GroupEvent::from(e)))
}

/// One item per call: `RNone` is the end.
async fn single<T: Send + 'static>(next: FfiResult<ROption<T>>) -> RResult<RVec<T>, PluginError> {
    next.await.map(|item| item.into_option().into_iter().collect())
}

pub(crate) fn feed_of_entries(stream: EntryStreamBox) -> Feed<(String, Vec<u8>)> {
    feed_from_batches(move || single(stream.next()), |entry| Some(entry.into()))
}

pub(crate) fn feed_of_chunks(stream: ChunkStreamBox) -> Feed<Vec<u8>> {
    feed_from_batches(move || single(stream.next()), |chunk| Some(chunk.into_vec()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use abi_stable::std_types::RString;

    use super::*;

    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_pump_runs_bounded_ahead_and_stops_when_the_stream_is_dropped() {
        let runtime = Arc::new(PluginRuntime::new("test", 1, None).unwrap());
        let produced = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (count, flag) = (produced.clone(), stopped.clone());
        let stream = entry_stream(&runtime, move |sender| async move {
            let _guard = SetOnDrop(flag);
            loop {
                let entry = FfiEntry { key: RString::from("k"), value: Default::default() };
                if sender.send(Ok(entry)).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        let host = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        host.block_on(async {
            for _ in 0..3 {
                assert!(matches!(stream.next().await, ROk(ROption::RSome(_))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let ahead = produced.load(Ordering::SeqCst);
        assert!(ahead <= 3 + STREAM_BUFFER + 1, "the pump ran {ahead} items ahead of a reader that took 3");
        drop(stream);
        std::thread::sleep(Duration::from_millis(200));
        assert!(stopped.load(Ordering::SeqCst), "dropping the stream must cancel the pump");
    }

    fn message(n: u8) -> FfiMessage {
        FfiMessage {
            id: RString::from(n.to_string()),
            topic: RString::from("t"),
            payload: vec![n].into(),
            metadata: Default::default(),
            published_at_unix_ms: 0,
            ack_id: RString::new(),
            delivery_count: 0,
        }
    }

    #[test]
    fn batches_hand_over_what_waits_and_an_error_comes_after_the_items_before_it() {
        let runtime = Arc::new(PluginRuntime::new("test", 1, None).unwrap());
        let stream = message_stream(&runtime, |sender| async move {
            for n in 0..3 {
                sender.send(Ok(message(n))).await.unwrap();
            }
            sender.send(Err(PluginError::unavailable("backend gone"))).await.unwrap();
        });
        let host = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        host.block_on(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match stream.next_batch(10).await {
                ROk(batch) => {
                    assert_eq!(batch.iter().map(|m| m.payload[0]).collect::<Vec<_>>(), vec![0, 1, 2])
                }
                RResult::RErr(error) => panic!("expected the three items first, got {error}"),
            }
            match stream.next_batch(10).await {
                RResult::RErr(error) => assert!(error.message().contains("backend gone")),
                ROk(batch) => panic!("expected the error, got {} items", batch.len()),
            }
        });
    }

    #[test]
    fn a_panicking_pump_ends_the_stream_with_an_internal_error() {
        let runtime = Arc::new(PluginRuntime::new("test", 1, None).unwrap());
        let stream = entry_stream(&runtime, |_sender| async move { panic!("pump exploded") });
        let host = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = host.block_on(stream.next());
        match result {
            RResult::RErr(error) => assert!(error.message().contains("pump exploded"), "{error}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
