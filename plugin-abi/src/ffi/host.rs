//! The host's safe view of a plugin: load a library, read its metadata, create
//! instances and call their interfaces with plain Rust types.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RStr, RString};

use crate::ffi::{self, PluginModuleRef};
use crate::interfaces::*;
use crate::{
    ConfigKey, Driver, ErrorCode, Health, Interface, Metadata, ObjectInfo, ObjectUpload, PluginError,
    PluginResult,
};

/// Why a library could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "cannot open {path}: a library this plugin links is missing or too old: {symbol} (see `ldd {path}`)"
    )]
    MissingDependency { symbol: String, path: PathBuf },
    #[error("{path} is not a Prism plugin (it exports no plugin root module)")]
    NotAPlugin { path: PathBuf },
    #[error("{path} was built against an incompatible plugin ABI: {summary}")]
    IncompatibleAbi {
        path: PathBuf,
        summary: String,
        /// abi_stable's full layout report, for debug logs.
        detail: String,
    },
}

/// A loaded plugin library. Libraries are never unloaded (abi_stable's rule), so this
/// is cheap to keep and the code stays mapped for as long as any instance runs.
#[derive(Clone)]
pub struct Plugin {
    module: PluginModuleRef,
    metadata: Metadata,
    path: PathBuf,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("metadata", &self.metadata).finish()
    }
}

impl Plugin {
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        let path = path.as_ref().to_path_buf();
        let (module, abi_version) = ffi::load::load_module(&path)?;
        let metadata = metadata_from_ffi(module.metadata(), abi_version);
        Ok(Plugin { module, metadata, path })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the plugin to parse a slot's `config` (TOML text) without connecting anywhere.
    pub fn check_config(&self, config_toml: &str) -> PluginResult<()> {
        (self.module.check_config())(RStr::from_str(config_toml)).into_result()
    }

    /// Creates an instance and checks that it provides exactly the declared interfaces.
    pub async fn create(&self, config_toml: &str) -> PluginResult<Instance> {
        self.create_in(config_toml, "").await
    }

    /// Like [`Plugin::create`], for `namespace`: the instance's `tracing` events reach
    /// this process's log with `plugin` and `namespace` fields, at its current level
    /// (plugins built against ABI 1.0 cannot forward theirs).
    pub async fn create_in(&self, config_toml: &str, namespace: &str) -> PluginResult<Instance> {
        let config = RString::from(config_toml);
        let created = match self.module.create_in() {
            Some(create_in) => {
                let context = ffi::FfiCreateContext {
                    namespace: RStr::from_str(namespace),
                    log: ffi::log::host_sink(),
                };
                create_in(config, context)
            }
            None => (self.module.create())(config),
        };
        let object = created.await.into_result()?;
        let interfaces = Interfaces::of(&object);
        let instance = Instance {
            lifecycle: Lifecycle::Ffi(object),
            interfaces,
            metadata: self.metadata.clone(),
            observer: None,
        };
        for &interface in Interface::ALL {
            let declared = self.metadata.implements(interface);
            if declared != instance.provides(interface) {
                return Err(PluginError::internal(format!(
                    "plugin '{}' {} interface {interface} in its metadata but its instance {} it",
                    self.metadata.name,
                    if declared { "declares" } else { "does not declare" },
                    if declared { "does not provide" } else { "provides" },
                )));
            }
        }
        Ok(instance)
    }
}

fn metadata_from_ffi(table: ffi::FfiMetadataRef, abi_version: String) -> Metadata {
    let mut interfaces = Vec::new();
    let mut unknown_interfaces = Vec::new();
    for name in table.interfaces().iter() {
        match Interface::from_name(name.as_str()) {
            Some(interface) => interfaces.push(interface),
            None => unknown_interfaces.push(name.as_str().to_owned()),
        }
    }
    Metadata {
        name: table.name().as_str().to_owned(),
        version: table.version().as_str().to_owned(),
        description: table.description().as_str().to_owned(),
        connection_format: table.connection_format().as_str().to_owned(),
        abi_version,
        interfaces,
        unknown_interfaces,
        config_keys: table.config_keys().map(|keys| {
            keys.iter()
                .map(|key| ConfigKey {
                    name: key.name.as_str().to_owned(),
                    type_name: key.type_name.as_str().to_owned(),
                    default: Some(key.default.as_str().to_owned()).filter(|text| !text.is_empty()),
                    required: key.required,
                    doc: key.doc.as_str().to_owned(),
                })
                .collect()
        }),
        exclusive: table.exclusive().unwrap_or(false),
    }
}

/// The interface objects an instance handed over at creation (an accessor the plugin's
/// older vtable lacks answers `RNone`, so such interfaces read as absent), or a local
/// driver's interfaces.
macro_rules! interfaces {
    ($($interface:ident $slot:ident $box:ident $object:ident $handle:ident $call:ident $to:ident;)*) => {
        struct Interfaces {
            $($slot: Option<$object>,)*
        }

        impl Interfaces {
            fn of(instance: &ffi::InstanceBox) -> Interfaces {
                Interfaces { $($slot: instance.$slot().into_option().map($object::Ffi),)* }
            }

            fn local<D: EveryInterface>(driver: &Arc<D>, listed: &[Interface]) -> Interfaces {
                Interfaces {
                    $($slot: listed.contains(&Interface::$interface).then(|| $object::Local(driver.clone())),)*
                }
            }

            fn provides(&self, interface: Interface) -> bool {
                match interface {
                    $(Interface::$interface => self.$slot.is_some(),)*
                }
            }
        }

        impl Instance {
            $(
                /// The interface's handle, when the plugin provides it.
                pub fn $slot(&self) -> Option<$handle<'_>> {
                    let calls = Calls { observer: self.observer.as_deref(), interface: Interface::$interface };
                    self.interfaces.$slot.as_ref().map(|object| $handle::new(object, calls))
                }
            )*
        }

        $(
            impl InterfaceHandle for $handle<'_> {
                const INTERFACE: Interface = Interface::$interface;
            }
        )*

        pub use crate::interfaces::{$($handle),*};

        /// A driver that implements every interface: what a host builds in itself to stand
        /// in for a plugin that runs elsewhere (process isolation's forwarder).
        pub trait EveryInterface: Driver $(+ crate::$interface)* {}

        impl<D: Driver $(+ crate::$interface)*> EveryInterface for D {}
    };
}

/// A handle knows the interface it calls, so callers never spell its name.
pub trait InterfaceHandle {
    const INTERFACE: Interface;
}

crate::for_each_interface!(interfaces);

/// A created plugin instance. Everything it hands out keeps the plugin's runtime alive.
pub struct Instance {
    lifecycle: Lifecycle,
    interfaces: Interfaces,
    metadata: Metadata,
    observer: Option<Arc<dyn CallObserver>>,
}

/// Health and shutdown: through the plugin's instance object, or the local driver's own.
enum Lifecycle {
    Ffi(ffi::InstanceBox),
    Local(Arc<dyn DynDriver>),
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

trait DynDriver: Send + Sync {
    fn health(&self) -> BoxFuture<'_, Health>;
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

impl<D: Driver> DynDriver for D {
    fn health(&self) -> BoxFuture<'_, Health> {
        Box::pin(Driver::health(self))
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(Driver::shutdown(self))
    }
}

/// Told about every interface call an instance answers (not stream items): how long it
/// took and, when it failed, the error's code. The host's metrics implement it.
pub trait CallObserver: Send + Sync {
    fn observed(&self, interface: Interface, elapsed: Duration, error: Option<ErrorCode>);
}

/// What a handle needs to report its calls.
#[derive(Clone, Copy)]
pub(crate) struct Calls<'a> {
    observer: Option<&'a dyn CallObserver>,
    interface: Interface,
}

impl Calls<'_> {
    pub(crate) async fn time<T>(
        self,
        call: impl std::future::Future<Output = PluginResult<T>>,
    ) -> PluginResult<T> {
        let Some(observer) = self.observer else { return call.await };
        let started = Instant::now();
        let result = call.await;
        observer.observed(self.interface, started.elapsed(), result.as_ref().err().map(PluginError::code));
        result
    }
}

impl Instance {
    /// An instance served by `driver`, a driver built into the host itself rather than
    /// loaded from a library (process isolation's forwarder, which sends every call to the
    /// plugin's own process). It provides exactly `metadata`'s interfaces, and its calls
    /// go straight to the driver: nothing crosses the plugin ABI.
    pub fn from_driver<D: EveryInterface>(driver: D, metadata: Metadata) -> Instance {
        let driver = Arc::new(driver);
        let interfaces = Interfaces::local(&driver, &metadata.interfaces);
        Instance { lifecycle: Lifecycle::Local(driver), interfaces, metadata, observer: None }
    }

    /// Reports every interface call from now on to `observer`.
    pub fn observe_calls(&mut self, observer: Arc<dyn CallObserver>) {
        self.observer = Some(observer);
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn provides(&self, interface: Interface) -> bool {
        self.interfaces.provides(interface)
    }

    pub async fn health(&self) -> Health {
        match &self.lifecycle {
            Lifecycle::Ffi(object) => object.health().await.into(),
            Lifecycle::Local(driver) => driver.health().await,
        }
    }

    /// Lets the driver release its backend; call once, after in-flight calls finished.
    pub async fn shutdown(&self) {
        match &self.lifecycle {
            Lifecycle::Ffi(object) => object.shutdown().await,
            Lifecycle::Local(driver) => driver.shutdown().await,
        }
    }
}

/// An object being written into a plugin, one chunk per call. Dropped before `finish`,
/// the plugin aborts the upload and nothing is left visible.
pub struct ObjectWriter {
    inner: Writer,
}

enum Writer {
    Ffi(ffi::ObjectUploadBox),
    Local(Box<dyn DynObjectUpload>),
}

impl ObjectWriter {
    pub async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        match &mut self.inner {
            Writer::Ffi(upload) => upload.write(chunk.into()).await.into_result(),
            Writer::Local(upload) => upload.write(chunk).await,
        }
    }

    pub async fn finish(self) -> PluginResult<ObjectInfo> {
        match self.inner {
            Writer::Ffi(upload) => Ok(upload.finish().await.into_result()?.into()),
            Writer::Local(upload) => upload.finish().await,
        }
    }
}

/// [`ObjectUpload`] as an object, for an upload of a driver built into the host. Such an
/// upload dropped unfinished is aborted by its own `Drop` (process isolation's sends the
/// abort to the plugin process), as the FFI upload's is by the plugin.
trait DynObjectUpload: Send {
    fn write(&mut self, chunk: Vec<u8>) -> BoxFuture<'_, PluginResult<()>>;
    fn finish(self: Box<Self>) -> BoxFuture<'static, PluginResult<ObjectInfo>>;
}

impl<U: ObjectUpload> DynObjectUpload for U {
    fn write(&mut self, chunk: Vec<u8>) -> BoxFuture<'_, PluginResult<()>> {
        Box::pin(ObjectUpload::write(self, chunk))
    }
    fn finish(self: Box<Self>) -> BoxFuture<'static, PluginResult<ObjectInfo>> {
        Box::pin(ObjectUpload::finish(*self))
    }
}

impl<U: ObjectUpload> ffi::crossing::Erase<U> for ObjectWriter {
    fn erase(upload: U) -> Self {
        ObjectWriter { inner: Writer::Local(Box::new(upload)) }
    }
}

impl ffi::crossing::AssocFromFfi<ffi::ObjectUploadBox> for ObjectWriter {
    fn assoc_from_ffi(upload: ffi::ObjectUploadBox) -> Self {
        ObjectWriter { inner: Writer::Ffi(upload) }
    }
}
