//! The driver that stands in for a plugin running in its own process: every interface
//! method is one call over the process's connection. The forwarding itself is generated
//! from the interface declarations (`plugin_abi::remote`): this driver only carries the
//! calls (`Transport`), plus the object store's uploads, which span several calls. The
//! gateway wraps it in a plain `Instance` (`Instance::from_driver`, with no FFI in the
//! way), so nothing above this module can tell the two modes apart.

use std::sync::Arc;

use plugin_abi::remote::Transport;
use plugin_abi::{Driver, Feed, Health, ObjectEntry, ObjectInfo, ObjectRead, PluginError, PluginResult};
use serde::de::DeserializeOwned;

use super::connection::Connection;
use super::supervisor::Supervisor;
use super::wire::Call;

pub struct RemoteDriver {
    pub(super) process: Arc<Supervisor>,
}

impl Transport for RemoteDriver {
    async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        call: plugin_abi::remote::Call,
    ) -> PluginResult<T> {
        self.process.connection()?.call(&Call::Interface(call)).await
    }

    async fn feed<T: DeserializeOwned + Send + 'static>(
        &self,
        call: plugin_abi::remote::Call,
    ) -> PluginResult<Feed<T>> {
        let call = Call::Interface(call);
        let (_, feed) = self.process.connection()?.open_feed::<(), T>(&call, |_| true).await?;
        feed.ok_or_else(|| PluginError::internal("the plugin process opened no feed"))
    }
}

impl Driver for RemoteDriver {
    type Config = ();

    async fn create(_: ()) -> PluginResult<Self> {
        Err(PluginError::internal("a plugin process is started by its supervisor, not created from a config"))
    }

    async fn health(&self) -> Health {
        match self.process.connection() {
            Ok(connection) => match connection.call::<Health>(&Call::Health).await {
                Ok(health) => health,
                Err(error) => Health::unhealthy(error.message()),
            },
            Err(error) => Health::unhealthy(error.message()),
        }
    }

    async fn shutdown(&self) {
        self.process.shutdown().await;
    }
}

impl plugin_abi::ObjectStoreBasic for RemoteDriver {
    type Upload = RemoteUpload;

    async fn put(&self, key: &str) -> PluginResult<RemoteUpload> {
        let connection = self.process.connection()?;
        let (id, ()) = connection.call_with_id(&Call::ObjectPut { key: key.into() }).await?;
        Ok(RemoteUpload { connection, id, open: true })
    }
    async fn get(&self, key: &str) -> PluginResult<Option<ObjectRead>> {
        let connection = self.process.connection()?;
        let call = Call::ObjectGet { key: key.into() };
        let (info, chunks) =
            connection.open_feed::<Option<ObjectInfo>, Vec<u8>>(&call, Option::is_some).await?;
        Ok(info.zip(chunks).map(|(info, chunks)| ObjectRead { info, chunks }))
    }
    async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>> {
        self.process.connection()?.call(&Call::ObjectHead { key: key.into() }).await
    }
    async fn delete(&self, key: &str) -> PluginResult<bool> {
        self.process.connection()?.call(&Call::ObjectDelete { key: key.into() }).await
    }
    async fn list(&self, prefix: &str, after: &str, limit: u32) -> PluginResult<Vec<ObjectEntry>> {
        let call = Call::ObjectList { prefix: prefix.into(), after: after.into(), limit };
        self.process.connection()?.call(&call).await
    }
}

/// An upload held open in the plugin's process, named by the id of the call that began
/// it. It belongs to that process: if it dies, the upload fails with it.
pub struct RemoteUpload {
    connection: Arc<Connection>,
    id: u64,
    open: bool,
}

impl plugin_abi::ObjectUpload for RemoteUpload {
    async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        self.connection.call(&Call::ObjectWrite { upload: self.id, chunk }).await
    }
    async fn finish(mut self) -> PluginResult<ObjectInfo> {
        self.open = false;
        self.connection.call(&Call::ObjectFinish { upload: self.id }).await
    }
    async fn abort(mut self) {
        self.open = false;
        let _ = self.connection.call::<()>(&Call::ObjectAbort { upload: self.id }).await;
    }
}

impl Drop for RemoteUpload {
    fn drop(&mut self) {
        if self.open {
            self.connection.notify(&Call::ObjectAbort { upload: self.id });
        }
    }
}
