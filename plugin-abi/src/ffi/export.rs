//! The plugin side: adapters from a driver's safe async traits to the FFI objects,
//! and the root module that `export_plugin!` exports.

use std::sync::Arc;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, ROption, RResult, RSlice, RStr, RString},
};

use super::bridge::{bridge, panic_message, PluginRuntime};
use super::*;
use crate::interfaces::*;
use crate::{Driver, PluginError};

pub use super::PluginModuleRef;

/// The metadata table a plugin declares, built by `export_plugin!`.
pub struct StaticMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub connection_format: &'static str,
    pub interfaces: &'static [&'static str],
    /// Two instances must never run at once (see `Driver` docs and docs/PLUGIN_ABI.md).
    pub exclusive: bool,
}

/// Implemented by `export_plugin!` for the exported driver type.
pub trait Exported: Driver {
    const METADATA: StaticMetadata;
    fn register(parts: &mut InstanceParts<Self>);
}

pub trait InterfaceName {
    const NAME: &'static str;
}

pub trait Register<D> {
    fn register(parts: &mut InstanceParts<D>);
}

/// The instance under construction: the adapter every interface object wraps, and the
/// constructors `Register` fills in for the interfaces the driver implements.
pub struct InstanceParts<D> {
    adapter: Adapter<D>,
    provided: Provided<D>,
}

/// What every generated interface adapter wraps: the driver and its runtime.
pub(crate) struct Adapter<D> {
    pub(crate) driver: Arc<D>,
    pub(crate) runtime: Arc<PluginRuntime>,
}

impl<D> Clone for Adapter<D> {
    fn clone(&self) -> Self {
        Adapter { driver: self.driver.clone(), runtime: self.runtime.clone() }
    }
}

impl<D: Driver> Adapter<D> {
    /// Runs `call` against the driver on the plugin runtime, converting the result for FFI.
    pub(crate) fn call<T, R, F, Fut, C>(&self, call: F, convert: C) -> FfiResult<R>
    where
        T: 'static,
        R: 'static,
        F: FnOnce(Arc<D>) -> Fut,
        C: FnOnce(T) -> R + Send + 'static,
        Fut: std::future::Future<Output = Result<T, PluginError>> + Send + 'static,
    {
        let future = call(self.driver.clone());
        bridge(&self.runtime, async move {
            match future.await {
                Ok(value) => ROk(convert(value)),
                Err(error) => RErr(error),
            }
        })
    }
}

macro_rules! export_interfaces {
    ($($variant:ident $slot:ident $object:ident $dispatch:ident $handle:ident $call:ident $to:ident;)*) => {
        /// One marker type per interface, named like its trait, so `export_plugin!` can
        /// turn the listed trait names into registrations that only compile when the
        /// driver implements the trait.
        pub mod markers {
            $(pub struct $variant;)*
        }

        $(
            impl InterfaceName for markers::$variant {
                const NAME: &'static str = stringify!($slot);
            }

            impl<D: crate::$variant> Register<D> for markers::$variant {
                fn register(parts: &mut InstanceParts<D>) {
                    parts.provided.$slot = Some(|adapter| $to::from_value(adapter, TD_Opaque));
                }
            }
        )*

        /// One constructor per interface the driver registered; `None` = not provided.
        struct Provided<D> {
            $($slot: Option<fn(Adapter<D>) -> $object>,)*
        }

        impl<D> Default for Provided<D> {
            fn default() -> Self {
                Provided { $($slot: None,)* }
            }
        }

        impl<D: Driver> FfiInstance for InstanceObject<D> {
            fn health(&self) -> FfiFuture<FfiHealth> {
                self.adapter.health()
            }
            fn shutdown(&self) -> FfiFuture<()> {
                let driver = self.adapter.driver.clone();
                bridge(&self.adapter.runtime, async move { driver.shutdown().await })
            }
            $(
                fn $slot(&self) -> ROption<$object> {
                    self.provided.$slot.map(|make| make(self.adapter.clone())).into()
                }
            )*
        }
    };
}

crate::for_each_interface!(export_interfaces);

/// The object behind `InstanceBox`.
struct InstanceObject<D> {
    adapter: Adapter<D>,
    provided: Provided<D>,
}

impl<D: Driver> Adapter<D> {
    fn health(&self) -> FfiFuture<FfiHealth> {
        let driver = self.driver.clone();
        let last_panic = self.runtime.last_panic();
        bridge(&self.runtime, async move {
            if let Some(message) = last_panic {
                return FfiHealth { status: FfiHealthStatus::Unhealthy, message: message.into() };
            }
            driver.health().await.into()
        })
    }
}

fn parse_config<D: Driver>(config: &str) -> Result<D::Config, PluginError> {
    let parsed: D::Config =
        serde_path_to_error::deserialize(toml::Deserializer::new(config)).map_err(|error| {
            // Name the key that is wrong, down to the field: `busy_timeout_ms: invalid type …`.
            let path = error.path().to_string();
            let message = error.into_inner().message().trim().to_owned();
            let named = path == "." || message.starts_with("unknown field");
            PluginError::invalid_argument(if named { message } else { format!("{path}: {message}") })
        })?;
    D::check(&parsed)?;
    Ok(parsed)
}

fn guarded<T>(what: &str, body: impl FnOnce() -> RResult<T, PluginError>) -> RResult<T, PluginError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        RErr(PluginError::internal(format!("plugin panicked in {what}: {}", panic_message(&*payload))))
    })
}

/// The metadata table, leaked once per library load (the root module is built once).
fn metadata<D: Exported>() -> FfiMetadataRef {
    let table = &D::METADATA;
    let leak = |text: String| -> RStr<'static> { RStr::from_str(Box::leak(text.into_boxed_str())) };
    #[allow(unused_mut)] // appended to only by the test-next-minor build
    let mut interfaces: Vec<RStr<'static>> =
        table.interfaces.iter().map(|name| RStr::from_str(name)).collect();
    #[cfg(feature = "test-next-minor")]
    interfaces.push(RStr::from_str("keyvalue_from_the_future"));
    let interfaces = interfaces.into_boxed_slice();
    let config_keys: Box<[FfiConfigKey]> = D::config_keys()
        .into_iter()
        .map(|key| FfiConfigKey {
            name: leak(key.name),
            type_name: leak(key.type_name),
            default: leak(key.default.unwrap_or_default()),
            required: key.required,
            doc: leak(key.doc),
        })
        .collect();
    FfiMetadata {
        name: RStr::from_str(table.name),
        version: RStr::from_str(table.version),
        description: RStr::from_str(table.description),
        connection_format: RStr::from_str(table.connection_format),
        interfaces: RSlice::from_slice(Box::leak(interfaces)),
        config_keys: RSlice::from_slice(Box::leak(config_keys)),
        exclusive: table.exclusive,
        #[cfg(feature = "test-next-minor")]
        next_minor_note: RStr::from_str("a field this host does not know"),
    }
    .leak_into_prefix()
}

extern "C" fn check_config<D: Exported>(config: RStr<'_>) -> RResult<(), PluginError> {
    guarded("check_config", || parse_config::<D>(config.as_str()).map(|_| ()).into())
}

extern "C" fn create<D: Exported>(config: RString) -> FfiResult<InstanceBox> {
    create_instance::<D>(config, None)
}

extern "C" fn create_in<D: Exported>(
    config: RString,
    context: FfiCreateContext<'_>,
) -> FfiResult<InstanceBox> {
    let log = super::log::context(D::METADATA.name, context.namespace.as_str(), context.log);
    create_instance::<D>(config, Some(log))
}

fn create_instance<D: Exported>(
    config: RString,
    log: Option<&'static super::log::LogContext>,
) -> FfiResult<InstanceBox> {
    let runtime =
        match guarded("create", || PluginRuntime::new(D::METADATA.name, D::RUNTIME_WORKERS, log).into()) {
            ROk(runtime) => Arc::new(runtime),
            RErr(error) => return async move { RErr(error) }.into_ffi_future(),
        };
    let bridge_runtime = runtime.clone();
    bridge(&bridge_runtime, async move {
        let config = match parse_config::<D>(config.as_str()) {
            Ok(config) => config,
            Err(error) => return RErr(error),
        };
        let driver = match D::create(config).await {
            Ok(driver) => Arc::new(driver),
            Err(error) => return RErr(error),
        };
        let adapter = Adapter { driver, runtime };
        let mut parts = InstanceParts { adapter, provided: Provided::default() };
        D::register(&mut parts);
        let object = InstanceObject { adapter: parts.adapter, provided: parts.provided };
        ROk(FfiInstance_TO::from_value(object, TD_Opaque))
    })
}

trait IntoFfiFuture<T> {
    fn into_ffi_future(self) -> FfiFuture<T>;
}

impl<F: std::future::Future + Send + 'static> IntoFfiFuture<F::Output> for F
where
    F::Output: 'static,
{
    fn into_ffi_future(self) -> FfiFuture<F::Output> {
        async_ffi::FutureExt::into_ffi(self)
    }
}

/// Builds the root module of a plugin whose driver is `D`. Called once per library load.
pub fn build_root_module<D: Exported>() -> PluginModuleRef {
    PluginModule {
        metadata: metadata::<D>(),
        check_config: check_config::<D>,
        create: create::<D>,
        create_in: create_in::<D>,
    }
    .leak_into_prefix()
}
