//! Every interface call as a plain serde value, for a host that serves a plugin in
//! another process (process isolation). Generated from the interface declarations:
//! each interface's `…Call` enum, its `dispatch` onto the instance's handle, and the
//! forwarder that implements the interface for any [`Transport`] by sending calls.
//! What carries the values (sockets, frames, credits) is the host's business.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::host::Instance;
use crate::{Feed, Interface, PluginError, PluginResult};

macro_rules! calls {
    ($($variant:ident $name:ident $box:ident $object:ident $handle:ident $call:ident $to:ident;)*) => {
        /// One call of any interface, with its arguments as owned values.
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        pub enum Call {
            $($variant(crate::interfaces::$call),)*
        }

        $(pub use crate::interfaces::$call;)*

        impl Call {
            /// Runs the call on `instance` and hands the result to `respond`; an interface
            /// the instance does not provide is `Unimplemented`.
            pub async fn dispatch(self, instance: &Instance, respond: impl Respond) {
                match self {
                    $(
                        Call::$variant(call) => match instance.$name() {
                            Some(handle) => call.dispatch(handle, respond).await,
                            None => respond.value::<()>(Err(missing(Interface::$variant))),
                        },
                    )*
                }
            }
        }
    };
}

crate::for_each_interface!(calls);

fn missing(interface: Interface) -> PluginError {
    PluginError::unimplemented(format!("this plugin does not implement {interface}"))
}

/// What carries calls to a plugin served elsewhere. Implementing it (plus [`crate::Driver`])
/// implements every interface whose calls are generated, by forwarding.
pub trait Transport: Send + Sync + 'static {
    /// Sends `call` and decodes its one answer.
    fn call<R: DeserializeOwned + Send + 'static>(
        &self,
        call: Call,
    ) -> impl Future<Output = PluginResult<R>> + Send;
    /// Sends `call`, which opens a feed, and hands out its items as they arrive.
    fn feed<R: DeserializeOwned + Send + 'static>(
        &self,
        call: Call,
    ) -> impl Future<Output = PluginResult<Feed<R>>> + Send;
}

/// How a result comes back over a [`Transport`]: one value, or a feed of them.
pub trait Fetch: Sized + Send + 'static {
    fn fetch<T: Transport>(transport: &T, call: Call) -> impl Future<Output = PluginResult<Self>> + Send;
}

impl<R: DeserializeOwned + Send + 'static> Fetch for R {
    fn fetch<T: Transport>(transport: &T, call: Call) -> impl Future<Output = PluginResult<Self>> + Send {
        transport.call(call)
    }
}

impl<R: DeserializeOwned + Send + 'static> Fetch for Feed<R> {
    fn fetch<T: Transport>(transport: &T, call: Call) -> impl Future<Output = PluginResult<Self>> + Send {
        transport.feed(call)
    }
}

/// Where the serving side sends a call's result: one value, or a feed to pump.
pub trait Respond: Send {
    fn value<T: Serialize>(self, result: PluginResult<T>);
    fn feed<T: Serialize + Send + 'static>(self, result: PluginResult<Feed<T>>);
}

/// How a result is sent back: values as they are, feeds opened.
pub trait Reply: Sized {
    fn reply(result: PluginResult<Self>, respond: impl Respond);
}

impl<T: Serialize> Reply for T {
    fn reply(result: PluginResult<Self>, respond: impl Respond) {
        respond.value(result)
    }
}

impl<T: Serialize + Send + 'static> Reply for Feed<T> {
    fn reply(result: PluginResult<Self>, respond: impl Respond) {
        respond.feed(result)
    }
}
