//! The gateway's end of one plugin process's socket: calls multiplexed by id, feeds
//! pulled with credit, pings. Once closed (the process died or was stopped), every
//! waiting call and feed fails with the cause, and so does every later call.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::{Feed, PluginError, PluginResult};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::outgoing::Outgoing;
use super::wire::{self, Call, Frame};

pub struct Connection {
    outgoing: Arc<Outgoing>,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Frame>>,
    feeds: HashMap<u64, mpsc::UnboundedSender<FeedEvent>>,
    /// Set once: why the connection is gone.
    closed: Option<PluginError>,
}

enum FeedEvent {
    Items(Frame),
    End(Option<PluginError>),
}

impl Connection {
    /// Starts the reader and writer tasks on `stream`. The receiver resolves when the
    /// peer closes the socket or breaks the protocol (with what happened).
    pub fn open(stream: UnixStream) -> (Arc<Connection>, oneshot::Receiver<String>) {
        let (reader, writer) = stream.into_split();
        // Buffered: under load one read takes many frames, not two syscalls per frame.
        let mut reader = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, reader);
        let outgoing = Outgoing::start(writer);
        let connection =
            Arc::new(Connection { outgoing, waiting: Mutex::default(), next_id: AtomicU64::new(1) });
        let (disconnected, ended) = oneshot::channel();
        let weak = Arc::downgrade(&connection);
        tokio::spawn(async move {
            let why = loop {
                match wire::read_frame(&mut reader).await {
                    Ok(Some(frame)) => match weak.upgrade() {
                        Some(connection) => connection.dispatch(frame),
                        None => return,
                    },
                    Ok(None) => break "it closed its connection".to_owned(),
                    Err(error) => break format!("its connection failed: {error}"),
                }
            };
            let _ = disconnected.send(why);
        });
        (connection, ended)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dispatch(&self, frame: Frame) {
        let mut waiting = self.lock();
        match frame.kind {
            wire::REPLY | wire::PONG => {
                if let Some(reply) = waiting.replies.remove(&frame.id) {
                    let _ = reply.send(frame);
                }
            }
            wire::ITEMS => {
                let id = frame.id;
                let delivered =
                    waiting.feeds.get(&id).is_some_and(|feed| feed.send(FeedEvent::Items(frame)).is_ok());
                if !delivered && waiting.feeds.remove(&id).is_some() {
                    drop(waiting);
                    self.send(wire::CANCEL, id, &());
                }
            }
            wire::END => {
                let error: Option<PluginError> =
                    frame.decode().unwrap_or_else(|e| Some(wire::undecodable("a feed's end", e)));
                if let Some(feed) = waiting.feeds.remove(&frame.id) {
                    let _ = feed.send(FeedEvent::End(error));
                }
            }
            _ => {}
        }
    }

    fn send(&self, kind: u8, id: u64, body: &impl serde::Serialize) {
        // A send fails only once the socket has, which `close` reports to everyone.
        self.outgoing.send(&wire::frame(kind, id, body));
    }

    /// Fails every waiting call and feed, and every later one, with `cause`.
    pub fn close(&self, cause: PluginError) {
        let mut waiting = self.lock();
        if waiting.closed.is_none() {
            waiting.closed = Some(cause.clone());
        }
        waiting.replies.clear();
        for (_, feed) in waiting.feeds.drain() {
            let _ = feed.send(FeedEvent::End(Some(cause.clone())));
        }
    }

    /// Sends `kind` with a fresh id and waits for the frame answering it.
    async fn exchange(
        &self,
        kind: u8,
        body: &impl serde::Serialize,
        feed: Option<mpsc::UnboundedSender<FeedEvent>>,
    ) -> PluginResult<(u64, Frame)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = self.lock();
            if let Some(cause) = &waiting.closed {
                return Err(cause.clone());
            }
            waiting.replies.insert(id, reply);
            if let Some(feed) = feed {
                waiting.feeds.insert(id, feed);
            }
        }
        // Whoever stops waiting takes its entry out, so a map never keeps a cancelled call.
        let forget = Forget { connection: self, id };
        self.send(kind, id, body);
        let frame = answer.await.map_err(|_| self.closed_cause())?;
        std::mem::forget(forget);
        Ok((id, frame))
    }

    fn closed_cause(&self) -> PluginError {
        self.lock().closed.clone().unwrap_or_else(|| PluginError::unavailable("the plugin process went away"))
    }

    /// One call and its typed reply.
    pub async fn call<T: DeserializeOwned>(&self, call: &Call) -> PluginResult<T> {
        let (_, frame) = self.exchange(wire::CALL, call, None).await?;
        frame.decode::<PluginResult<T>>().map_err(|e| wire::undecodable("a reply", e))?
    }

    /// One call, its typed reply, and its id (which names what it opened in the child).
    pub async fn call_with_id<T: DeserializeOwned>(&self, call: &Call) -> PluginResult<(u64, T)> {
        let (id, frame) = self.exchange(wire::CALL, call, None).await?;
        let reply = frame.decode::<PluginResult<T>>().map_err(|e| wire::undecodable("a reply", e))??;
        Ok((id, reply))
    }

    /// Sends a call whose reply nobody waits for (an abandoned upload's abort).
    pub fn notify(&self, call: &Call) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(wire::CALL, id, call);
    }

    /// The first frame the child answers: the plugin's metadata once its instance is up.
    pub async fn hello(&self, hello: &wire::Hello) -> PluginResult<wire::Ready> {
        let (_, frame) = self.exchange(wire::CALL, hello, None).await?;
        frame.decode::<PluginResult<wire::Ready>>().map_err(|e| wire::undecodable("its metadata", e))?
    }

    /// A call that opens a feed of `T`: its reply `R`, and the feed when the reply says
    /// there is one (`opened`).
    pub async fn open_feed<R, T>(
        self: &Arc<Self>,
        call: &Call,
        opened: impl FnOnce(&R) -> bool,
    ) -> PluginResult<(R, Option<Feed<T>>)>
    where
        R: DeserializeOwned,
        T: DeserializeOwned + Send + 'static,
    {
        let (events, receiver) = mpsc::unbounded_channel();
        let (id, frame) = self.exchange(wire::CALL, call, Some(events)).await?;
        let reply = frame.decode::<PluginResult<R>>().map_err(|e| wire::undecodable("a reply", e));
        let reply = match reply.and_then(|reply| reply) {
            Ok(reply) => reply,
            Err(error) => {
                self.lock().feeds.remove(&id);
                return Err(error);
            }
        };
        if !opened(&reply) {
            self.lock().feeds.remove(&id);
            return Ok((reply, None));
        }
        let state = FeedState::<T> {
            connection: self.clone(),
            id,
            events: receiver,
            buffered: VecDeque::new(),
            done: false,
        };
        let feed = Feed::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Ok((reply, Some(feed)))
    }

    /// Whether the child answers a ping within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.exchange(wire::PING, &(), None)).await, Ok(Ok(_)))
    }
}

/// Removes a call's waiting entries when its caller stops waiting (dropped future).
struct Forget<'a> {
    connection: &'a Connection,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let removed_feed = {
            let mut waiting = self.connection.lock();
            waiting.replies.remove(&self.id);
            waiting.feeds.remove(&self.id).is_some()
        };
        if removed_feed {
            self.connection.send(wire::CANCEL, self.id, &());
        }
    }
}

/// The gateway's side of one feed: batches arrive as `ITEMS` frames, each taken one
/// returns a credit; dropping it cancels the feed in the child.
struct FeedState<T> {
    connection: Arc<Connection>,
    id: u64,
    events: mpsc::UnboundedReceiver<FeedEvent>,
    buffered: VecDeque<T>,
    done: bool,
}

impl<T: DeserializeOwned> FeedState<T> {
    async fn next(&mut self) -> Option<PluginResult<T>> {
        loop {
            if let Some(item) = self.buffered.pop_front() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            match self.events.recv().await {
                Some(FeedEvent::Items(frame)) => {
                    self.connection.send(wire::CREDIT, self.id, &());
                    match frame.decode::<Vec<T>>() {
                        Ok(items) => self.buffered.extend(items),
                        Err(error) => {
                            self.finish();
                            return Some(Err(wire::undecodable("feed items", error)));
                        }
                    }
                }
                Some(FeedEvent::End(error)) => {
                    self.done = true;
                    if let Some(error) = error {
                        return Some(Err(error));
                    }
                }
                None => {
                    self.done = true;
                    return Some(Err(self.connection.closed_cause()));
                }
            }
        }
    }
}

impl<T> FeedState<T> {
    /// Stops the feed here and in the child (once).
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.connection.lock().feeds.remove(&self.id);
            self.connection.send(wire::CANCEL, self.id, &());
        }
    }
}

impl<T> Drop for FeedState<T> {
    fn drop(&mut self) {
        self.finish();
    }
}
