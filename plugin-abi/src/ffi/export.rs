//! The plugin side: adapters from a driver's safe async traits to the FFI objects,
//! and the root module that `export_plugin!` exports.

use std::sync::Arc;
use std::time::Duration;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, ROption, RResult, RSlice, RStr, RString, RVec},
};

use super::bridge::{bridge, panic_message, PluginRuntime};
use super::stream::{entry_stream, STREAM_BUFFER};
use super::*;
use crate::{Driver, PluginError, PluginResult, TransactionId};

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

struct Adapter<D> {
    driver: Arc<D>,
    runtime: Arc<PluginRuntime>,
}

impl<D> Clone for Adapter<D> {
    fn clone(&self) -> Self {
        Adapter { driver: self.driver.clone(), runtime: self.runtime.clone() }
    }
}

impl<D: Driver> Adapter<D> {
    /// Runs `call` against the driver on the plugin runtime, converting the result for FFI.
    fn call<T, R, F, Fut, C>(&self, call: F, convert: C) -> FfiResult<R>
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

fn owned(s: RStr<'_>) -> String {
    s.as_str().to_owned()
}

/// Milliseconds from the FFI as a `Duration`.
fn duration_ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn bytes_vec(values: Vec<Vec<u8>>) -> RVec<RVec<u8>> {
    values.into_iter().map(RVec::from).collect()
}

macro_rules! export_interfaces {
    ($($variant:ident $slot:ident $object:ident, $to:ident, $handle:ident;)*) => {
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

        /// A driver that implements every interface: what a host builds in itself to stand
        /// in for a plugin that runs elsewhere (process isolation's proxy).
        pub trait EveryInterface: Driver $(+ crate::$variant)* {}

        impl<D: Driver $(+ crate::$variant)*> EveryInterface for D {}

        /// Registers the `listed` interfaces of a driver that implements them all.
        fn register_listed<D: EveryInterface>(parts: &mut InstanceParts<D>, listed: &[crate::Interface]) {
            $(
                if listed.contains(&crate::Interface::$variant) {
                    <markers::$variant as Register<D>>::register(parts);
                }
            )*
        }

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

impl<D: crate::KeyValueBasic> FfiKeyValueBasic for Adapter<D> {
    fn get(&self, key: RStr<'_>) -> FfiResult<ROption<RVec<u8>>> {
        let key = owned(key);
        self.call(|d| async move { d.get(&key).await }, |v| v.map(RVec::from).into())
    }
    fn set(&self, key: RStr<'_>, value: RVec<u8>) -> FfiResult<()> {
        let key = owned(key);
        self.call(|d| async move { d.set(&key, value.into_vec()).await }, |()| ())
    }
    fn delete(&self, key: RStr<'_>) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.delete(&key).await }, |b| b)
    }
    fn exists(&self, key: RStr<'_>) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.exists(&key).await }, |b| b)
    }
}

impl<D: crate::KeyValueTtl> FfiKeyValueTtl for Adapter<D> {
    fn set_with_ttl(&self, key: RStr<'_>, value: RVec<u8>, ttl_millis: u64) -> FfiResult<()> {
        let key = owned(key);
        self.call(
            |d| async move { d.set_with_ttl(&key, value.into_vec(), duration_ms(ttl_millis)).await },
            |()| (),
        )
    }
    fn expire(&self, key: RStr<'_>, ttl_millis: u64) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.expire(&key, duration_ms(ttl_millis)).await }, |b| b)
    }
    fn get_ttl(&self, key: RStr<'_>) -> FfiResult<FfiTtl> {
        let key = owned(key);
        self.call(|d| async move { d.get_ttl(&key).await }, FfiTtl::from)
    }
    fn persist(&self, key: RStr<'_>) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.persist(&key).await }, |b| b)
    }
}

impl<D: crate::KeyValueScan> FfiKeyValueScan for Adapter<D> {
    fn scan(&self, prefix: RStr<'_>, cursor: ROption<RStr<'_>>, limit: u32) -> FfiResult<FfiScanPage> {
        let prefix = owned(prefix);
        let cursor = cursor.into_option().map(owned);
        self.call(|d| async move { d.scan(&prefix, cursor.as_deref(), limit).await }, FfiScanPage::from)
    }
    fn count(&self, prefix: RStr<'_>) -> FfiResult<u64> {
        let prefix = owned(prefix);
        self.call(|d| async move { d.count(&prefix).await }, |n| n)
    }
    fn scan_stream(&self, prefix: RStr<'_>) -> EntryStreamBox {
        let prefix = owned(prefix);
        let driver = self.driver.clone();
        entry_stream(&self.runtime, move |sender| async move {
            let mut cursor: Option<String> = None;
            loop {
                let page = match driver.scan(&prefix, cursor.as_deref(), STREAM_BUFFER as u32).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                for entry in page.entries {
                    if sender.send(Ok(FfiEntry::from(entry))).await.is_err() {
                        return;
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return,
                }
            }
        })
    }
}

impl<D: crate::KeyValueBatch> FfiKeyValueBatch for Adapter<D> {
    fn batch_get(&self, keys: RVec<RString>) -> FfiResult<RVec<ROption<RVec<u8>>>> {
        let keys: Vec<String> = keys.into_iter().map(RString::into_string).collect();
        self.call(
            |d| async move { d.batch_get(keys).await },
            |values| values.into_iter().map(|v| v.map(RVec::from).into()).collect(),
        )
    }
    fn batch_set(&self, entries: RVec<FfiEntry>) -> FfiResult<RVec<RResult<(), PluginError>>> {
        let entries: Vec<(String, Vec<u8>)> = entries.into_iter().map(<(String, Vec<u8>)>::from).collect();
        self.call(
            |d| async move { d.batch_set(entries).await },
            |results| results.into_iter().map(RResult::from).collect(),
        )
    }
    fn batch_delete(&self, keys: RVec<RString>) -> FfiResult<RVec<bool>> {
        let keys: Vec<String> = keys.into_iter().map(RString::into_string).collect();
        self.call(|d| async move { d.batch_delete(keys).await }, RVec::from)
    }
}

impl<D: crate::KeyValueCas> FfiKeyValueCas for Adapter<D> {
    fn get_versioned(&self, key: RStr<'_>) -> FfiResult<ROption<FfiVersioned>> {
        let key = owned(key);
        self.call(|d| async move { d.get_versioned(&key).await }, |v| v.map(FfiVersioned::from).into())
    }
    fn compare_and_swap(
        &self,
        key: RStr<'_>,
        expected_version: u64,
        value: RVec<u8>,
        ttl_millis: u64,
    ) -> FfiResult<FfiCas> {
        let key = owned(key);
        let ttl = (ttl_millis > 0).then(|| duration_ms(ttl_millis));
        self.call(
            |d| async move { d.compare_and_swap(&key, expected_version, value.into_vec(), ttl).await },
            FfiCas::from,
        )
    }
    fn delete_if_version(&self, key: RStr<'_>, expected_version: u64) -> FfiResult<FfiCas> {
        let key = owned(key);
        self.call(|d| async move { d.delete_if_version(&key, expected_version).await }, FfiCas::from)
    }
}

impl<D: crate::ListBasic> FfiListBasic for Adapter<D> {
    fn push(&self, key: RStr<'_>, end: FfiListEnd, values: RVec<RVec<u8>>) -> FfiResult<u64> {
        let key = owned(key);
        let values: Vec<Vec<u8>> = values.into_iter().map(RVec::into_vec).collect();
        self.call(|d| async move { d.push(&key, end.into(), values).await }, |n| n)
    }
    fn pop(&self, key: RStr<'_>, end: FfiListEnd, count: u32) -> FfiResult<RVec<RVec<u8>>> {
        let key = owned(key);
        self.call(|d| async move { d.pop(&key, end.into(), count).await }, bytes_vec)
    }
    fn length(&self, key: RStr<'_>) -> FfiResult<u64> {
        let key = owned(key);
        self.call(|d| async move { d.length(&key).await }, |n| n)
    }
}

impl<D: crate::ListRange> FfiListRange for Adapter<D> {
    fn range(&self, key: RStr<'_>, start: i64, stop: i64) -> FfiResult<RVec<RVec<u8>>> {
        let key = owned(key);
        self.call(|d| async move { d.range(&key, start, stop).await }, bytes_vec)
    }
    fn trim(&self, key: RStr<'_>, start: i64, stop: i64) -> FfiResult<()> {
        let key = owned(key);
        self.call(|d| async move { d.trim(&key, start, stop).await }, |()| ())
    }
}

impl<D: crate::KeyValueTransactional> FfiKeyValueTransactional for Adapter<D> {
    fn begin(&self, timeout_millis: u64) -> FfiResult<u64> {
        self.call(|d| async move { d.begin(duration_ms(timeout_millis)).await }, |tx| tx.0)
    }
    fn tx_get(&self, tx: u64, key: RStr<'_>) -> FfiResult<ROption<RVec<u8>>> {
        let key = owned(key);
        self.call(|d| async move { d.tx_get(TransactionId(tx), &key).await }, |v| v.map(RVec::from).into())
    }
    fn tx_set(&self, tx: u64, key: RStr<'_>, value: RVec<u8>) -> FfiResult<()> {
        let key = owned(key);
        self.call(|d| async move { d.tx_set(TransactionId(tx), &key, value.into_vec()).await }, |()| ())
    }
    fn tx_delete(&self, tx: u64, key: RStr<'_>) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.tx_delete(TransactionId(tx), &key).await }, |b| b)
    }
    fn commit(&self, tx: u64) -> FfiResult<()> {
        self.call(|d| async move { d.commit(TransactionId(tx)).await }, |()| ())
    }
    fn rollback(&self, tx: u64) -> FfiResult<()> {
        self.call(|d| async move { d.rollback(TransactionId(tx)).await }, |()| ())
    }
}

impl<D: crate::QueueBasic> FfiQueueBasic for Adapter<D> {
    fn enqueue(&self, queue: RStr<'_>, payload: RVec<u8>) -> FfiResult<RString> {
        let queue = owned(queue);
        self.call(|d| async move { d.enqueue(&queue, payload.into_vec()).await }, RString::from)
    }
    fn dequeue(&self, queue: RStr<'_>, max: u32) -> FfiResult<RVec<FfiQueueMessage>> {
        let queue = owned(queue);
        self.call(
            |d| async move { d.dequeue(&queue, max).await },
            |messages| messages.into_iter().map(FfiQueueMessage::from).collect(),
        )
    }
    fn ack(&self, queue: RStr<'_>, receipt: RStr<'_>) -> FfiResult<bool> {
        let (queue, receipt) = (owned(queue), owned(receipt));
        self.call(|d| async move { d.ack(&queue, &receipt).await }, |b| b)
    }
    fn nack(&self, queue: RStr<'_>, receipt: RStr<'_>, delay_millis: u64) -> FfiResult<bool> {
        let (queue, receipt) = (owned(queue), owned(receipt));
        self.call(|d| async move { d.nack(&queue, &receipt, duration_ms(delay_millis)).await }, |b| b)
    }
}

impl<D: crate::QueueVisibility> FfiQueueVisibility for Adapter<D> {
    fn dequeue_with_visibility(
        &self,
        queue: RStr<'_>,
        max: u32,
        visibility_millis: u64,
    ) -> FfiResult<RVec<FfiQueueMessage>> {
        let queue = owned(queue);
        self.call(
            |d| async move { d.dequeue_with_visibility(&queue, max, duration_ms(visibility_millis)).await },
            |messages| messages.into_iter().map(FfiQueueMessage::from).collect(),
        )
    }
    fn extend_visibility(
        &self,
        queue: RStr<'_>,
        receipt: RStr<'_>,
        visibility_millis: u64,
    ) -> FfiResult<bool> {
        let (queue, receipt) = (owned(queue), owned(receipt));
        self.call(
            |d| async move { d.extend_visibility(&queue, &receipt, duration_ms(visibility_millis)).await },
            |b| b,
        )
    }
}

impl<D: crate::QueueDeadLetter> FfiQueueDeadLetter for Adapter<D> {
    fn dead_letters(
        &self,
        queue: RStr<'_>,
        cursor: ROption<RStr<'_>>,
        limit: u32,
    ) -> FfiResult<FfiDeadLetterPage> {
        let queue = owned(queue);
        let cursor = cursor.into_option().map(owned);
        self.call(
            |d| async move { d.dead_letters(&queue, cursor.as_deref(), limit).await },
            FfiDeadLetterPage::from,
        )
    }
    fn replay_dead_letters(&self, queue: RStr<'_>, ids: RVec<RString>) -> FfiResult<u64> {
        let queue = owned(queue);
        let ids: Vec<String> = ids.into_iter().map(RString::into_string).collect();
        self.call(|d| async move { d.replay_dead_letters(&queue, ids).await }, |n| n)
    }
}

impl<D: crate::QueueDelayed> FfiQueueDelayed for Adapter<D> {
    fn enqueue_at(&self, queue: RStr<'_>, payload: RVec<u8>, deliver_at_unix_ms: i64) -> FfiResult<RString> {
        let queue = owned(queue);
        self.call(
            |d| async move { d.enqueue_at(&queue, payload.into_vec(), deliver_at_unix_ms).await },
            RString::from,
        )
    }
}

/// Forwards a plugin feed, converted, into the bounded channel the host reads; stops at
/// the first error, or when the host drops its end (which drops the feed, cancelling it
/// in the backend).
async fn forward<T: Send + 'static, U>(
    mut feed: crate::Feed<T>,
    convert: fn(T) -> U,
    sender: tokio::sync::mpsc::Sender<PluginResult<U>>,
) {
    while let Some(item) = feed.next().await {
        let failed = item.is_err();
        if sender.send(item.map(convert)).await.is_err() || failed {
            return;
        }
    }
}

fn pump_subscription<D>(adapter: &Adapter<D>, subscription: crate::Subscription) -> MessageStreamBox {
    super::stream::message_stream(&adapter.runtime, move |sender| {
        forward(subscription, FfiMessage::from, sender)
    })
}

impl<D: crate::PubSubBasic> FfiPubSubBasic for Adapter<D> {
    fn publish(&self, topic: RStr<'_>, payload: RVec<u8>, metadata: RVec<FfiHeader>) -> FfiResult<RString> {
        let topic = owned(topic);
        let metadata: Vec<(String, String)> =
            metadata.into_iter().map(|h| (h.name.into_string(), h.value.into_string())).collect();
        self.call(|d| async move { d.publish(&topic, payload.into_vec(), metadata).await }, RString::from)
    }
    fn subscribe(&self, topic: RStr<'_>) -> FfiResult<MessageStreamBox> {
        let topic = owned(topic);
        let adapter = self.clone();
        self.call(
            |d| async move { d.subscribe(&topic).await },
            move |subscription| pump_subscription(&adapter, subscription),
        )
    }
}

impl<D: crate::PubSubWildcards> FfiPubSubWildcards for Adapter<D> {
    fn subscribe_pattern(&self, pattern: RStr<'_>) -> FfiResult<MessageStreamBox> {
        let pattern = owned(pattern);
        let adapter = self.clone();
        self.call(
            |d| async move { d.subscribe_pattern(&pattern).await },
            move |subscription| pump_subscription(&adapter, subscription),
        )
    }
}

impl<D: crate::PubSubPersistent> FfiPubSubPersistent for Adapter<D> {
    fn subscribe_durable(
        &self,
        name: RStr<'_>,
        topic: RStr<'_>,
        ack_wait_millis: u64,
    ) -> FfiResult<MessageStreamBox> {
        let (name, topic) = (owned(name), owned(topic));
        let adapter = self.clone();
        self.call(
            |d| async move { d.subscribe_durable(&name, &topic, duration_ms(ack_wait_millis)).await },
            move |subscription| pump_subscription(&adapter, subscription),
        )
    }
    fn ack(&self, name: RStr<'_>, ack_id: RStr<'_>) -> FfiResult<()> {
        let (name, ack_id) = (owned(name), owned(ack_id));
        self.call(|d| async move { d.ack(&name, &ack_id).await }, |()| ())
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

/// An instance of a driver the host built itself, providing the `listed` interfaces.
pub(crate) fn local_instance<D: EveryInterface>(
    driver: D,
    name: &str,
    listed: &[crate::Interface],
) -> PluginResult<InstanceBox> {
    let runtime = Arc::new(PluginRuntime::new(name, 1, None)?);
    let adapter = Adapter { driver: Arc::new(driver), runtime };
    let mut parts = InstanceParts { adapter, provided: Provided::default() };
    register_listed(&mut parts, listed);
    let object = InstanceObject { adapter: parts.adapter, provided: parts.provided };
    Ok(FfiInstance_TO::from_value(object, TD_Opaque))
}

fn pump_feed<D, T: Send + 'static>(
    adapter: &Adapter<D>,
    feed: crate::Feed<T>,
    convert: fn(T) -> FfiStreamEvent,
) -> EventStreamBox {
    super::stream::event_stream(&adapter.runtime, move |sender| forward(feed, convert, sender))
}

impl<D: crate::StreamBasic> FfiStreamBasic for Adapter<D> {
    fn append(&self, stream: RStr<'_>, record: FfiNewRecord) -> FfiResult<FfiAppended> {
        let stream = owned(stream);
        self.call(|d| async move { d.append(&stream, record.into()).await }, FfiAppended::from)
    }
    fn read(
        &self,
        stream: RStr<'_>,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> FfiResult<EventStreamBox> {
        let stream = owned(stream);
        let adapter = self.clone();
        self.call(
            |d| async move { d.read(&stream, partition, from_offset, follow).await },
            move |feed| pump_feed(&adapter, feed, |record| FfiStreamEvent::Record(record.into())),
        )
    }
    fn offsets(&self, stream: RStr<'_>) -> FfiResult<RVec<FfiPartitionOffsets>> {
        let stream = owned(stream);
        self.call(
            |d| async move { d.offsets(&stream).await },
            |offsets| offsets.into_iter().map(FfiPartitionOffsets::from).collect(),
        )
    }
}

impl<D: crate::StreamPartitioning> FfiStreamPartitioning for Adapter<D> {
    fn append_to_partition(
        &self,
        stream: RStr<'_>,
        partition: u32,
        record: FfiNewRecord,
    ) -> FfiResult<FfiAppended> {
        let stream = owned(stream);
        self.call(
            |d| async move { d.append_to_partition(&stream, partition, record.into()).await },
            FfiAppended::from,
        )
    }
}

impl<D: crate::StreamReplay> FfiStreamReplay for Adapter<D> {
    fn offset_for_timestamp(
        &self,
        stream: RStr<'_>,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> FfiResult<u64> {
        let stream = owned(stream);
        self.call(
            |d| async move { d.offset_for_timestamp(&stream, partition, timestamp_unix_ms).await },
            |o| o,
        )
    }
}

impl<D: crate::StreamConsumerGroups> FfiStreamConsumerGroups for Adapter<D> {
    fn join(&self, stream: RStr<'_>, group: RStr<'_>) -> FfiResult<EventStreamBox> {
        let (stream, group) = (owned(stream), owned(group));
        let adapter = self.clone();
        self.call(
            |d| async move { d.join(&stream, &group).await },
            move |feed| pump_feed(&adapter, feed, FfiStreamEvent::from),
        )
    }
    fn commit(&self, stream: RStr<'_>, group: RStr<'_>, ack_id: RStr<'_>) -> FfiResult<()> {
        let (stream, group, ack_id) = (owned(stream), owned(group), owned(ack_id));
        self.call(|d| async move { d.commit(&stream, &group, &ack_id).await }, |()| ())
    }
    fn committed(&self, stream: RStr<'_>, group: RStr<'_>) -> FfiResult<RVec<FfiCommitted>> {
        let (stream, group) = (owned(stream), owned(group));
        self.call(
            |d| async move { d.committed(&stream, &group).await },
            |positions| {
                positions
                    .into_iter()
                    .map(|(partition, offset)| FfiCommitted { partition, offset: offset.into() })
                    .collect()
            },
        )
    }
}

impl<D: crate::StateTransfer> FfiStateTransfer for Adapter<D> {
    fn export_state(&self) -> FfiResult<RVec<u8>> {
        self.call(|d| async move { d.export_state().await }, RVec::from)
    }
    fn import_state(&self, state: RVec<u8>) -> FfiResult<()> {
        self.call(|d| async move { d.import_state(state.into_vec()).await }, |()| ())
    }
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

impl<D: crate::ObjectStoreBasic> FfiObjectStoreBasic for Adapter<D> {
    fn put(&self, key: RStr<'_>) -> FfiResult<ObjectUploadBox> {
        let key = owned(key);
        let runtime = self.runtime.clone();
        self.call(
            |d| async move { d.put(&key).await },
            move |upload| super::upload::object_upload(&runtime, upload),
        )
    }
    fn get(&self, key: RStr<'_>) -> FfiResult<ROption<FfiObjectRead>> {
        let key = owned(key);
        let runtime = self.runtime.clone();
        self.call(
            |d| async move { d.get(&key).await },
            move |read: Option<crate::ObjectRead>| {
                read.map(|read| FfiObjectRead {
                    info: read.info.into(),
                    chunks: super::stream::chunk_stream(&runtime, move |sender| {
                        forward(read.chunks, RVec::from, sender)
                    }),
                })
                .into()
            },
        )
    }
    fn head(&self, key: RStr<'_>) -> FfiResult<ROption<FfiObjectInfo>> {
        let key = owned(key);
        self.call(|d| async move { d.head(&key).await }, |info| info.map(FfiObjectInfo::from).into())
    }
    fn delete(&self, key: RStr<'_>) -> FfiResult<bool> {
        let key = owned(key);
        self.call(|d| async move { d.delete(&key).await }, |deleted| deleted)
    }
}
