//! `prism plugin-host`: the child side of process isolation. It connects to the
//! gateway's socket, applies its limits and drops privileges, then opens the library
//! the gateway names and serves one instance's calls until the gateway hangs up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use plugin_abi::host::{ChunkStream, EventStream, Instance, MessageStream, ObjectWriter, Plugin};
use plugin_abi::{GroupEvent, Metadata, PluginError, PluginResult, StreamRecord};
use serde::Serialize;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore};

use super::wire::{self, Call, Hello};

/// The limits `prism plugin-host` applies to itself before it opens the library.
#[derive(Debug, Clone)]
pub struct ChildLimits {
    pub memory_limit_mb: u64,
    pub cpu_time_limit_s: u64,
    pub max_open_files: u64,
    pub user: Option<String>,
}

/// Runs the child until the gateway closes the socket. Errors are for stderr, which
/// the gateway reads as the child's last words.
pub fn run(connect: PathBuf, limits: ChildLimits) -> Result<(), String> {
    // If the gateway dies, so does this process: nobody else would ever call it.
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot tie this process to the gateway's life: {e}"))?;
    // Two pollers: a call that hogs one (a plugin computing, or blocking where it should
    // not) leaves the other to answer the gateway's pings, health checks and other calls.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("prism-plugin-host")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let stream = UnixStream::connect(&connect)
            .await
            .map_err(|e| format!("cannot connect to the gateway at {}: {e}", connect.display()))?;
        // Connected first: the socket's directory is the gateway user's, closed to others.
        serve(stream, &limits).await
    })
}

fn apply_limits(limits: &ChildLimits) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let set = |resource: Resource, value: u64, what: &str| {
        setrlimit(resource, value, value).map_err(|e| format!("cannot limit {what} to {value}: {e}"))
    };
    if limits.memory_limit_mb > 0 {
        set(Resource::RLIMIT_AS, limits.memory_limit_mb << 20, "the address space")?;
    }
    if limits.cpu_time_limit_s > 0 {
        set(Resource::RLIMIT_CPU, limits.cpu_time_limit_s, "CPU time")?;
    }
    set(Resource::RLIMIT_NOFILE, limits.max_open_files, "open files")?;
    // No core dumps: a plugin's memory may hold credentials and data in flight.
    set(Resource::RLIMIT_CORE, 0, "core dumps")?;
    if let Some(name) = &limits.user {
        drop_to_user(name)?;
    }
    // Nothing this process runs from now on can gain privileges (setuid binaries, file caps).
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    Ok(())
}

fn drop_to_user(name: &str) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, User};
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user '{name}': {e}"))?
        .ok_or_else(|| format!("there is no user '{name}'"))?;
    setgroups(&[user.gid]).map_err(|e| format!("cannot drop supplementary groups to run as '{name}': {e} (the gateway must run as root to change user)"))?;
    setgid(user.gid).map_err(|e| format!("cannot switch to group {} of '{name}': {e}", user.gid))?;
    setuid(user.uid).map_err(|e| format!("cannot switch to user '{name}': {e}"))?;
    Ok(())
}

/// One served instance: what the calls reach, and the feeds and uploads open in it.
struct Served {
    instance: Instance,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    feeds: Mutex<HashMap<u64, Feed>>,
    uploads: Mutex<HashMap<u64, ObjectWriter>>,
}

struct Feed {
    credit: Arc<Semaphore>,
    pump: tokio::task::JoinHandle<()>,
}

async fn serve(stream: UnixStream, limits: &ChildLimits) -> Result<(), String> {
    let (reader, writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, reader);
    let (outgoing, writing) = super::outgoing::batched(writer);
    let first =
        wire::read_frame(&mut reader).await.map_err(|e| format!("reading the gateway's hello: {e}"))?;
    let Some(first) = first else { return Ok(()) };
    let hello: Hello = first.decode()?;
    let created = match Library::read(&hello.library, limits) {
        Ok(library) => open(&library, &hello).await,
        Err(error) => Err(PluginError::failed_precondition(error)),
    };
    let _ = outgoing.send(wire::frame(
        wire::REPLY,
        first.id,
        &created.as_ref().map(|(_, m)| m.clone()).map_err(Clone::clone),
    ));
    let Ok((instance, _)) = created else {
        drop(outgoing);
        let _ = writing.await;
        return Ok(());
    };
    let served = Arc::new(Served {
        instance,
        outgoing: outgoing.clone(),
        feeds: Mutex::default(),
        uploads: Mutex::default(),
    });
    loop {
        let frame = match wire::read_frame(&mut reader).await {
            Ok(Some(frame)) => frame,
            // The gateway hung up (or broke the protocol): nobody will call again.
            Ok(None) | Err(_) => std::process::exit(0),
        };
        match frame.kind {
            wire::CALL => {
                let call: Call = match frame.decode() {
                    Ok(call) => call,
                    Err(error) => {
                        served.reply::<()>(frame.id, Err(PluginError::internal(error)));
                        continue;
                    }
                };
                if matches!(call, Call::Shutdown) {
                    served.instance.shutdown().await;
                    served.reply(frame.id, Ok(()));
                    drop(served);
                    drop(outgoing);
                    let _ = writing.await;
                    std::process::exit(0);
                }
                let served = served.clone();
                tokio::spawn(async move { served.handle(frame.id, call).await });
            }
            wire::CREDIT => {
                if let Some(feed) = served.feeds.lock().unwrap_or_else(|e| e.into_inner()).get(&frame.id) {
                    feed.credit.add_permits(1);
                }
            }
            wire::CANCEL => {
                let cancelled = served.feeds.lock().unwrap_or_else(|e| e.into_inner()).remove(&frame.id);
                if let Some(feed) = cancelled {
                    // Gone before the next frame is read, as a dropped feed is in process:
                    // a call the gateway sent after the drop (a publish to a durable
                    // subscription just left) must not race the old subscription.
                    feed.pump.abort();
                    let _ = feed.pump.await;
                }
            }
            wire::PING => {
                let _ = outgoing.send(wire::frame(wire::PONG, frame.id, &()));
            }
            _ => {}
        }
    }
}

/// The library this process opens, read while it still has the gateway's privileges:
/// the vetted copy lives in a directory only the gateway's user may read, so a child
/// that runs as another user gets the bytes first, then drops privileges, then opens
/// them from memory. No plugin code runs before the limits and the user switch.
struct Library {
    path: PathBuf,
    _in_memory: Option<std::fs::File>,
}

impl Library {
    fn read(copy: &std::path::Path, limits: &ChildLimits) -> Result<Library, String> {
        if limits.user.is_none() {
            apply_limits(limits)?;
            return Ok(Library { path: copy.to_path_buf(), _in_memory: None });
        }
        let bytes = std::fs::read(copy).map_err(|e| format!("cannot read {}: {e}", copy.display()))?;
        apply_limits(limits)?;
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let memory = nix::sys::memfd::memfd_create("prism-plugin", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| format!("cannot hold the library in memory: {e}"))?;
        let mut file = std::fs::File::from(memory);
        file.write_all(&bytes).map_err(|e| format!("cannot hold the library in memory: {e}"))?;
        Ok(Library {
            path: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            _in_memory: Some(file),
        })
    }
}

async fn open(library: &Library, hello: &Hello) -> PluginResult<(Instance, Metadata)> {
    let plugin = Plugin::load(&library.path).map_err(|e| PluginError::failed_precondition(e.to_string()))?;
    let instance = plugin.create_in(&hello.config, &hello.namespace).await?;
    let metadata = plugin.metadata().clone();
    Ok((instance, metadata))
}

fn missing(interface: &str) -> PluginError {
    PluginError::unimplemented(format!("this plugin does not implement {interface}"))
}

macro_rules! handle {
    ($served:expr, $interface:ident) => {
        $served.instance.$interface().ok_or_else(|| missing(stringify!($interface)))
    };
}

/// What a feed pumps: items of one kind, batch by batch.
enum Source {
    Messages(MessageStream),
    Records(EventStream),
    Events(EventStream),
    Chunks(ChunkStream),
}

impl Source {
    /// The next `ITEMS` frame, or the `END` frame (and `true`) once the feed is over.
    async fn next_frame(&mut self, id: u64) -> (Vec<u8>, bool) {
        fn items<T: Serialize>(id: u64, batch: Option<PluginResult<Vec<T>>>) -> (Vec<u8>, bool) {
            match batch {
                Some(Ok(items)) => (wire::frame(wire::ITEMS, id, &items), false),
                Some(Err(error)) => (wire::frame(wire::END, id, &Some(error)), true),
                None => (wire::frame(wire::END, id, &None::<PluginError>), true),
            }
        }
        match self {
            Source::Messages(stream) => items(id, stream.next_batch(wire::FEED_BATCH).await),
            Source::Events(stream) => items(id, stream.next_batch(wire::FEED_BATCH).await),
            Source::Records(stream) => {
                let batch = stream.next_batch(wire::FEED_BATCH).await.map(|batch| {
                    batch.map(|events| {
                        events
                            .into_iter()
                            .filter_map(|event| match event {
                                GroupEvent::Record(record) => Some(record),
                                GroupEvent::Assigned(_) => None,
                            })
                            .collect::<Vec<StreamRecord>>()
                    })
                });
                items(id, batch)
            }
            Source::Chunks(stream) => {
                items(id, stream.next().await.map(|chunk| chunk.map(|chunk| vec![chunk])))
            }
        }
    }
}

impl Served {
    fn reply<T: Serialize>(&self, id: u64, result: PluginResult<T>) {
        let _ = self.outgoing.send(wire::frame(wire::REPLY, id, &result));
    }

    /// Replies that the feed is open, then pumps it within the gateway's credit.
    fn open_feed<R: Serialize>(self: &Arc<Self>, id: u64, reply: R, mut source: Source) {
        let credit = Arc::new(Semaphore::new(wire::FEED_CREDIT));
        let served = self.clone();
        let permits = credit.clone();
        // Registered under the lock the pump takes to leave: a feed that ends at once
        // cannot leave before it was entered.
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let pump = tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.acquire().await else { return };
                permit.forget();
                let (frame, ended) = source.next_frame(id).await;
                let _ = served.outgoing.send(frame);
                if ended {
                    served.feeds.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    return;
                }
            }
        });
        feeds.insert(id, Feed { credit, pump });
        drop(feeds);
        // The reply goes out after the feed is registered, so its credits find it; its
        // items queue behind the reply on the one writer.
        self.reply(id, Ok(reply));
    }

    fn take_upload(&self, upload: u64) -> PluginResult<ObjectWriter> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&upload)
            .ok_or_else(|| PluginError::failed_precondition("the upload has already finished or failed"))
    }

    async fn handle(self: Arc<Self>, id: u64, call: Call) {
        macro_rules! reply {
            ($result:expr) => {{
                let result = async { $result }.await;
                self.reply(id, result)
            }};
        }
        macro_rules! feed {
            ($opened:expr, $source:path) => {{
                match async { $opened }.await {
                    Ok(stream) => self.open_feed(id, (), $source(stream)),
                    Err(error) => self.reply::<()>(id, Err(error)),
                }
            }};
        }
        match call {
            Call::Health => self.reply(id, Ok(self.instance.health().await)),
            Call::Shutdown => self.reply(id, Ok(())),
            Call::Get { key } => reply!(handle!(self, keyvalue_basic)?.get(&key).await),
            Call::Set { key, value } => reply!(handle!(self, keyvalue_basic)?.set(&key, value).await),
            Call::Delete { key } => reply!(handle!(self, keyvalue_basic)?.delete(&key).await),
            Call::Exists { key } => reply!(handle!(self, keyvalue_basic)?.exists(&key).await),
            Call::SetWithTtl { key, value, ttl_ms } => {
                reply!(handle!(self, keyvalue_ttl)?.set_with_ttl(&key, value, ms(ttl_ms)).await)
            }
            Call::Expire { key, ttl_ms } => {
                reply!(handle!(self, keyvalue_ttl)?.expire(&key, ms(ttl_ms)).await)
            }
            Call::GetTtl { key } => reply!(handle!(self, keyvalue_ttl)?.get_ttl(&key).await),
            Call::Persist { key } => reply!(handle!(self, keyvalue_ttl)?.persist(&key).await),
            Call::Scan { prefix, cursor, limit } => {
                reply!(handle!(self, keyvalue_scan)?.scan(&prefix, cursor.as_deref(), limit).await)
            }
            Call::Count { prefix } => reply!(handle!(self, keyvalue_scan)?.count(&prefix).await),
            Call::BatchGet { keys } => reply!(handle!(self, keyvalue_batch)?.batch_get(&keys).await),
            Call::BatchSet { entries } => reply!(handle!(self, keyvalue_batch)?.batch_set(entries).await),
            Call::BatchDelete { keys } => reply!(handle!(self, keyvalue_batch)?.batch_delete(&keys).await),
            Call::GetVersioned { key } => reply!(handle!(self, keyvalue_cas)?.get_versioned(&key).await),
            Call::CompareAndSwap { key, expected_version, value, ttl_ms } => reply!(
                handle!(self, keyvalue_cas)?
                    .compare_and_swap(&key, expected_version, value, ttl_ms.map(ms))
                    .await
            ),
            Call::DeleteIfVersion { key, expected_version } => {
                reply!(handle!(self, keyvalue_cas)?.delete_if_version(&key, expected_version).await)
            }
            Call::Begin { timeout_ms } => {
                reply!(handle!(self, keyvalue_transactional)?.begin(ms(timeout_ms)).await)
            }
            Call::TxGet { tx, key } => {
                reply!(handle!(self, keyvalue_transactional)?.get(plugin_abi::TransactionId(tx), &key).await)
            }
            Call::TxSet { tx, key, value } => {
                reply!(
                    handle!(self, keyvalue_transactional)?
                        .set(plugin_abi::TransactionId(tx), &key, value)
                        .await
                )
            }
            Call::TxDelete { tx, key } => {
                reply!(
                    handle!(self, keyvalue_transactional)?.delete(plugin_abi::TransactionId(tx), &key).await
                )
            }
            Call::Commit { tx } => {
                reply!(handle!(self, keyvalue_transactional)?.commit(plugin_abi::TransactionId(tx)).await)
            }
            Call::Rollback { tx } => {
                reply!(handle!(self, keyvalue_transactional)?.rollback(plugin_abi::TransactionId(tx)).await)
            }
            Call::Push { key, end, values } => {
                reply!(handle!(self, list_basic)?.push(&key, end, values).await)
            }
            Call::Pop { key, end, count } => reply!(handle!(self, list_basic)?.pop(&key, end, count).await),
            Call::Length { key } => reply!(handle!(self, list_basic)?.length(&key).await),
            Call::Range { key, start, stop } => {
                reply!(handle!(self, list_range)?.range(&key, start, stop).await)
            }
            Call::Trim { key, start, stop } => {
                reply!(handle!(self, list_range)?.trim(&key, start, stop).await)
            }
            Call::Enqueue { queue, payload } => {
                reply!(handle!(self, queue_basic)?.enqueue(&queue, payload).await)
            }
            Call::Dequeue { queue, max } => reply!(handle!(self, queue_basic)?.dequeue(&queue, max).await),
            Call::Ack { queue, receipt } => reply!(handle!(self, queue_basic)?.ack(&queue, &receipt).await),
            Call::Nack { queue, receipt, delay_ms } => {
                reply!(handle!(self, queue_basic)?.nack(&queue, &receipt, ms(delay_ms)).await)
            }
            Call::DequeueWithVisibility { queue, max, visibility_ms } => reply!(
                handle!(self, queue_visibility)?
                    .dequeue_with_visibility(&queue, max, ms(visibility_ms))
                    .await
            ),
            Call::ExtendVisibility { queue, receipt, visibility_ms } => reply!(
                handle!(self, queue_visibility)?.extend_visibility(&queue, &receipt, ms(visibility_ms)).await
            ),
            Call::DeadLetters { queue, cursor, limit } => {
                reply!(handle!(self, queue_dead_letter)?.dead_letters(&queue, cursor.as_deref(), limit).await)
            }
            Call::ReplayDeadLetters { queue, ids } => {
                reply!(handle!(self, queue_dead_letter)?.replay_dead_letters(&queue, &ids).await)
            }
            Call::EnqueueAt { queue, payload, deliver_at_unix_ms } => {
                reply!(handle!(self, queue_delayed)?.enqueue_at(&queue, payload, deliver_at_unix_ms).await)
            }
            Call::Publish { topic, payload, metadata } => {
                reply!(handle!(self, pubsub_basic)?.publish(&topic, payload, metadata).await)
            }
            Call::Subscribe { topic } => {
                feed!(handle!(self, pubsub_basic)?.subscribe(&topic).await, Source::Messages)
            }
            Call::SubscribePattern { pattern } => {
                feed!(handle!(self, pubsub_wildcards)?.subscribe_pattern(&pattern).await, Source::Messages)
            }
            Call::SubscribeDurable { name, topic, ack_wait_ms } => feed!(
                handle!(self, pubsub_persistent)?.subscribe_durable(&name, &topic, ms(ack_wait_ms)).await,
                Source::Messages
            ),
            Call::AckDurable { name, ack_id } => {
                reply!(handle!(self, pubsub_persistent)?.ack(&name, &ack_id).await)
            }
            Call::Append { stream, record } => {
                reply!(handle!(self, stream_basic)?.append(&stream, record).await)
            }
            Call::Read { stream, partition, from_offset, follow } => feed!(
                handle!(self, stream_basic)?.read(&stream, partition, from_offset, follow).await,
                Source::Records
            ),
            Call::Offsets { stream } => reply!(handle!(self, stream_basic)?.offsets(&stream).await),
            Call::AppendToPartition { stream, partition, record } => {
                reply!(
                    handle!(self, stream_partitioning)?.append_to_partition(&stream, partition, record).await
                )
            }
            Call::OffsetForTimestamp { stream, partition, timestamp_unix_ms } => reply!(
                handle!(self, stream_replay)?
                    .offset_for_timestamp(&stream, partition, timestamp_unix_ms)
                    .await
            ),
            Call::Join { stream, group } => {
                feed!(handle!(self, stream_consumer_groups)?.join(&stream, &group).await, Source::Events)
            }
            Call::CommitGroup { stream, group, ack_id } => {
                reply!(handle!(self, stream_consumer_groups)?.commit(&stream, &group, &ack_id).await)
            }
            Call::Committed { stream, group } => {
                reply!(handle!(self, stream_consumer_groups)?.committed(&stream, &group).await)
            }
            Call::ExportState => reply!(handle!(self, state_transfer)?.export_state().await),
            Call::ImportState { state } => reply!(handle!(self, state_transfer)?.import_state(state).await),
            Call::ObjectPut { key } => {
                let started = async { handle!(self, object_store_basic)?.put(&key).await }.await;
                match started {
                    Ok(writer) => {
                        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(id, writer);
                        self.reply(id, Ok(()));
                    }
                    Err(error) => self.reply::<()>(id, Err(error)),
                }
            }
            Call::ObjectWrite { upload, chunk } => {
                let written = async {
                    let mut writer = self.take_upload(upload)?;
                    writer.write(chunk).await?;
                    self.uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(upload, writer);
                    Ok(())
                }
                .await;
                self.reply(id, written)
            }
            Call::ObjectFinish { upload } => reply!(self.take_upload(upload)?.finish().await),
            Call::ObjectAbort { upload } => {
                // Dropping the writer aborts the upload in the plugin.
                drop(self.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(&upload));
                self.reply(id, Ok(()))
            }
            Call::ObjectGet { key } => {
                let read = async { handle!(self, object_store_basic)?.get(&key).await }.await;
                match read {
                    Ok(Some((info, chunks))) => self.open_feed(id, Some(info), Source::Chunks(chunks)),
                    Ok(None) => self.reply(id, Ok(None::<plugin_abi::ObjectInfo>)),
                    Err(error) => self.reply::<()>(id, Err(error)),
                }
            }
            Call::ObjectHead { key } => reply!(handle!(self, object_store_basic)?.head(&key).await),
            Call::ObjectDelete { key } => reply!(handle!(self, object_store_basic)?.delete(&key).await),
        }
    }
}

fn ms(millis: u64) -> std::time::Duration {
    std::time::Duration::from_millis(millis)
}
