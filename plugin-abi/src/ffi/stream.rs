//! Streams across the boundary: the plugin pumps items into a bounded channel from a
//! task on its own runtime (so a slow reader applies backpressure), and the host pulls
//! them one `next()` future at a time. Dropping the stream aborts the pump task.

use std::sync::Arc;

use abi_stable::{
    sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, ROk, ROption, RResult},
};
use tokio::sync::{mpsc, Mutex};

use super::bridge::{bridge, CatchPanic, PluginRuntime};
use super::{FfiEntry, FfiResult};
use crate::PluginError;

/// How many items a plugin may produce ahead of the host's reader.
pub const STREAM_BUFFER: usize = 64;

#[sabi_trait]
pub trait FfiEntryStream: Send + Sync {
    /// The next item; `RNone` when the stream has ended.
    #[sabi(last_prefix_field)]
    fn next(&self) -> FfiResult<ROption<FfiEntry>>;
}

pub(crate) type EntryStreamBox = FfiEntryStream_TO<'static, RBox<()>>;

type Item<T> = Result<T, PluginError>;

/// The plugin-side end of a stream: the receiving half plus the pump task to cancel.
struct ChannelStream<T> {
    receiver: Arc<Mutex<mpsc::Receiver<Item<T>>>>,
    pump: tokio::task::AbortHandle,
    runtime: Arc<PluginRuntime>,
}

impl<T> Drop for ChannelStream<T> {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl FfiEntryStream for ChannelStream<FfiEntry> {
    fn next(&self) -> FfiResult<ROption<FfiEntry>> {
        let receiver = self.receiver.clone();
        bridge(&self.runtime, async move {
            match receiver.lock().await.recv().await {
                Some(Ok(item)) => ROk(ROption::RSome(item)),
                Some(Err(error)) => RResult::RErr(error),
                None => ROk(ROption::RNone),
            }
        })
    }
}

/// Starts `pump` on the plugin runtime, feeding a bounded channel, and returns the
/// stream object the host reads. `pump` should stop when `send` fails (reader gone).
pub(crate) fn entry_stream<P, F>(runtime: &Arc<PluginRuntime>, pump: P) -> EntryStreamBox
where
    P: FnOnce(mpsc::Sender<Item<FfiEntry>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let panic_sender = sender.clone();
    let pump = pump(sender);
    let task = runtime.handle().spawn(async move {
        if let Err(message) = CatchPanic::new(pump).await {
            let _ = panic_sender.send(Err(PluginError::internal(message))).await;
        }
    });
    let stream = ChannelStream {
        receiver: Arc::new(Mutex::new(receiver)),
        pump: task.abort_handle(),
        runtime: runtime.clone(),
    };
    FfiEntryStream_TO::from_value(stream, TD_Opaque)
}
