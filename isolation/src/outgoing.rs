//! The frames one end sends on its socket, written two ways. The gateway's `Outgoing`:
//! the sender writes a frame itself when the socket takes it at once and nothing is
//! queued (no task hop per call); otherwise it is queued for a flusher task. The plugin
//! process's `batched` writer: every frame goes to one task, which writes whatever has
//! queued in one write — under many calls in flight that measured better there
//! (docs/BENCHMARKS.md).

use std::sync::{Arc, Mutex, Weak};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};

pub struct Outgoing {
    socket: OwnedWriteHalf,
    state: Mutex<State>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    queued: Vec<u8>,
    /// The flusher owns the socket until the queue is empty: frames keep their order.
    flushing: bool,
    /// The socket failed; the reader side reports the connection gone.
    failed: bool,
}

impl Outgoing {
    pub fn start(socket: OwnedWriteHalf) -> Arc<Outgoing> {
        let wake = Arc::new(Notify::new());
        let outgoing = Arc::new(Outgoing { socket, state: Mutex::default(), wake: wake.clone() });
        tokio::spawn(flush(Arc::downgrade(&outgoing), wake));
        outgoing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn send(&self, frame: &[u8]) {
        let mut state = self.lock();
        if state.failed {
            return;
        }
        if state.flushing || !state.queued.is_empty() {
            state.queued.extend_from_slice(frame);
            return;
        }
        match self.socket.try_write(frame) {
            Ok(written) if written == frame.len() => return,
            Ok(written) => state.queued.extend_from_slice(&frame[written..]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                state.queued.extend_from_slice(frame)
            }
            Err(_) => {
                state.failed = true;
                return;
            }
        }
        state.flushing = true;
        drop(state);
        self.wake.notify_one();
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        // Lets the flusher see that nobody sends any more, and end.
        self.wake.notify_one();
    }
}

async fn flush(outgoing: Weak<Outgoing>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(outgoing) = outgoing.upgrade() else { return };
        loop {
            let chunk = {
                let mut state = outgoing.lock();
                if state.queued.is_empty() {
                    state.flushing = false;
                    break;
                }
                std::mem::take(&mut state.queued)
            };
            if write_all(&outgoing.socket, &chunk).await.is_err() {
                outgoing.lock().failed = true;
                return;
            }
        }
    }
}

async fn write_all(socket: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Most bytes of queued frames one write of the batched writer carries.
const BATCH_BYTES: usize = 256 * 1024;

/// A task writing the frames sent to it, those queued meanwhile in one write. It ends,
/// flushed, once every sender is dropped.
pub fn batched(mut socket: OwnedWriteHalf) -> (mpsc::UnboundedSender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (frames, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
    let task = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = queued.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < BATCH_BYTES {
                match queued.try_recv() {
                    Ok(next) => batch.extend_from_slice(&next),
                    Err(_) => break,
                }
            }
            if socket.write_all(&batch).await.is_err() {
                return;
            }
        }
        let _ = socket.flush().await;
    });
    (frames, task)
}
