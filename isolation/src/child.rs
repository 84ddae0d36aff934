//! `prism plugin-host`: the child side of process isolation. It connects to the
//! gateway's socket, applies its limits and drops privileges, then opens the library
//! the gateway names and serves one instance's calls until the gateway hangs up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use plugin_abi::host::{Instance, ObjectWriter, Plugin};
use plugin_abi::remote::Respond;
use plugin_abi::{Metadata, PluginError, PluginResult};
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
    /// Enter the sandbox (Landlock and seccomp) before the library is opened.
    pub sandbox: bool,
}

/// Runs the child until the gateway closes the socket. Errors are for stderr, which
/// the gateway reads as the child's last words.
pub fn run(connect: PathBuf, limits: ChildLimits) -> Result<(), String> {
    // If the gateway dies, so does this process: nobody else would ever call it.
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot tie this process to the gateway's life: {e}"))?;
    // The hello is read on this one thread: the sandbox binds the thread that enters it
    // and the threads it starts later, so no other may exist until it is entered.
    let Some(handshake) = handshake(&connect)? else { return Ok(()) };
    let library = Library::read(&handshake.hello, &limits);
    // Two pollers: a call that hogs one (a plugin computing, or blocking where it should
    // not) leaves the other to answer the gateway's pings, health checks and other calls.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("prism-plugin-host")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let stream = UnixStream::from_std(handshake.stream)
            .map_err(|e| format!("cannot use the gateway's socket: {e}"))?;
        serve(stream, handshake.id, &handshake.hello, library).await
    })
}

/// The gateway's socket and its first frame.
struct Handshake {
    stream: std::os::unix::net::UnixStream,
    id: u64,
    hello: Hello,
}

/// Connects and reads the hello on a runtime with no thread of its own; `None` if the
/// gateway hung up first.
fn handshake(connect: &std::path::Path) -> Result<Option<Handshake>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let mut stream = UnixStream::connect(connect)
            .await
            .map_err(|e| format!("cannot connect to the gateway at {}: {e}", connect.display()))?;
        // Unbuffered, so that nothing after the hello is read into a buffer left behind.
        let first =
            wire::read_frame(&mut stream).await.map_err(|e| format!("reading the gateway's hello: {e}"))?;
        let Some(first) = first else { return Ok(None) };
        let hello: Hello = first.decode()?;
        let stream = stream.into_std().map_err(|e| format!("cannot take over the gateway's socket: {e}"))?;
        Ok(Some(Handshake { stream, id: first.id, hello }))
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

async fn serve(
    stream: UnixStream,
    hello_id: u64,
    hello: &Hello,
    library: Result<Library, String>,
) -> Result<(), String> {
    let (reader, writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, reader);
    let (outgoing, writing) = super::outgoing::batched(writer);
    let created = match library {
        Ok(library) => open(&library, hello).await,
        Err(error) => Err(PluginError::failed_precondition(error)),
    };
    let ready = created
        .as_ref()
        .map(|(_, metadata, sandbox)| wire::Ready { metadata: metadata.clone(), sandbox: sandbox.clone() });
    let _ = outgoing.send(wire::frame(wire::REPLY, hello_id, &ready.map_err(Clone::clone)));
    let Ok((instance, _, _)) = created else {
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
    /// Held open: `path` names it through /proc/self/fd.
    _in_memory: Option<std::fs::File>,
    /// What the sandbox enforces, for the gateway's status: `off` when it is off.
    sandbox: &'static str,
}

impl Library {
    /// Reads the library, applies the limits and enters the sandbox, in that order.
    fn read(hello: &Hello, limits: &ChildLimits) -> Result<Library, String> {
        let (path, in_memory) = Library::copy_for(&hello.library, limits)?;
        if !limits.sandbox {
            tracing::warn!(namespace = %hello.namespace, "sandbox off: the plugin runs with every right of its user");
            return Ok(Library { path, _in_memory: in_memory, sandbox: "off" });
        }
        let on_disk = in_memory.is_none().then_some(path.as_path());
        let grants =
            super::sandbox::Grants { library: on_disk, configs: std::slice::from_ref(&hello.config) };
        let entered = super::sandbox::enter(&grants)?;
        tracing::info!(namespace = %hello.namespace, "{}", entered.describe());
        Ok(Library { path, _in_memory: in_memory, sandbox: entered.summary() })
    }

    /// The path to open, and the in-memory copy it names when the child switched user.
    fn copy_for(
        copy: &std::path::Path,
        limits: &ChildLimits,
    ) -> Result<(PathBuf, Option<std::fs::File>), String> {
        if limits.user.is_none() {
            apply_limits(limits)?;
            return Ok((copy.to_path_buf(), None));
        }
        let bytes = std::fs::read(copy).map_err(|e| format!("cannot read {}: {e}", copy.display()))?;
        apply_limits(limits)?;
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let memory = nix::sys::memfd::memfd_create("prism-plugin", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| format!("cannot hold the library in memory: {e}"))?;
        let mut file = std::fs::File::from(memory);
        file.write_all(&bytes).map_err(|e| format!("cannot hold the library in memory: {e}"))?;
        Ok((PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())), Some(file)))
    }
}

async fn open(library: &Library, hello: &Hello) -> PluginResult<(Instance, Metadata, String)> {
    let plugin = Plugin::load(&library.path).map_err(|e| PluginError::failed_precondition(e.to_string()))?;
    let instance = plugin.create_in(&hello.config, &hello.namespace).await?;
    let metadata = plugin.metadata().clone();
    Ok((instance, metadata, library.sandbox.to_owned()))
}

fn missing(interface: &str) -> PluginError {
    PluginError::unimplemented(format!("this plugin does not implement {interface}"))
}

/// Where a generated dispatch sends its result: a `REPLY`, or an opened feed.
struct Responder<'a> {
    served: &'a Arc<Served>,
    id: u64,
}

impl Respond for Responder<'_> {
    fn value<T: Serialize>(self, result: PluginResult<T>) {
        self.served.reply(self.id, result)
    }

    fn feed<T: Serialize + Send + 'static>(self, result: PluginResult<plugin_abi::Feed<T>>) {
        match result {
            Ok(feed) => self.served.open_feed(self.id, (), feed, wire::FEED_BATCH),
            Err(error) => self.served.reply::<()>(self.id, Err(error)),
        }
    }
}

impl Served {
    fn reply<T: Serialize>(&self, id: u64, result: PluginResult<T>) {
        let _ = self.outgoing.send(wire::frame(wire::REPLY, id, &result));
    }

    /// Replies that the feed is open, then pumps it within the gateway's credit, up to
    /// `batch` items a frame.
    fn open_feed<R: Serialize, T: Serialize + Send + 'static>(
        self: &Arc<Self>,
        id: u64,
        reply: R,
        mut feed: plugin_abi::Feed<T>,
        batch: usize,
    ) {
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
                let (frame, ended) = match feed.next_batch(batch).await {
                    Some(Ok(items)) => (wire::frame(wire::ITEMS, id, &items), false),
                    Some(Err(error)) => (wire::frame(wire::END, id, &Some(error)), true),
                    None => (wire::frame(wire::END, id, &None::<PluginError>), true),
                };
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

    fn objects(&self) -> PluginResult<plugin_abi::host::ObjectStoreBasicHandle<'_>> {
        self.instance.object_store_basic().ok_or_else(|| missing("object_store_basic"))
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
        match call {
            Call::Health => self.reply(id, Ok(self.instance.health().await)),
            Call::Shutdown => self.reply(id, Ok(())),
            Call::Interface(call) => call.dispatch(&self.instance, Responder { served: &self, id }).await,
            Call::ObjectPut { key } => {
                let started = async { self.objects()?.put(&key).await }.await;
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
                let read = async { self.objects()?.get(&key).await }.await;
                match read {
                    // One chunk a frame: chunks are up to a MiB each.
                    Ok(Some(read)) => self.open_feed(id, Some(read.info), read.chunks, 1),
                    Ok(None) => self.reply(id, Ok(None::<plugin_abi::ObjectInfo>)),
                    Err(error) => self.reply::<()>(id, Err(error)),
                }
            }
            Call::ObjectHead { key } => reply!(self.objects()?.head(&key).await),
            Call::ObjectDelete { key } => reply!(self.objects()?.delete(&key).await),
            Call::ObjectList { prefix, after, limit } => {
                reply!(self.objects()?.list(&prefix, &after, limit).await)
            }
        }
    }
}
