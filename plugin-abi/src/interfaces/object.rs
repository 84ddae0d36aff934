//! Objects of any size, written and read in chunks (ABI 1.2). Declaration only;
//! `#[interface]` generates the rest, except the remote calls: an upload is a conversation
//! across calls, which process isolation carries by hand.

use std::future::Future;

use crate::{interface, Driver, ObjectEntry, ObjectInfo, ObjectRead, PluginResult};

/// `object_store_basic` (ABI 1.2): named objects of any size, written and read in chunks
/// so that no object is ever held whole in memory or in one buffer across the ABI.
#[interface(manual_remote)]
pub trait ObjectStoreBasic: Driver {
    /// An object being written.
    #[crossing(ffi = crate::ffi::ObjectUploadBox, erased = crate::host::ObjectWriter)]
    type Upload: ObjectUpload;

    /// Starts writing `key`. Nothing is visible under `key` until the upload finishes;
    /// then the object replaces any older one at once, whole.
    async fn put(&self, key: &str) -> PluginResult<Self::Upload>;
    /// The object's info and its bytes in order, or `None` when there is no such object.
    async fn get(&self, key: &str) -> PluginResult<Option<ObjectRead>>;
    async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>>;
    /// Returns whether an object was deleted.
    async fn delete(&self, key: &str) -> PluginResult<bool>;
    /// 1.3: up to `limit` objects whose keys start with `prefix`, in an order of the
    /// store's choosing that is the same on every call, starting after the object whose
    /// key is `after` (from the first when `after` is empty). Fewer than `limit` do not
    /// mean the end: an empty list does. Objects written or deleted during a listing may
    /// or may not appear; every object that exists throughout it appears exactly once.
    /// A plugin built before 1.3 answers `Unimplemented`.
    async fn list(&self, prefix: &str, after: &str, limit: u32) -> PluginResult<Vec<ObjectEntry>> {
        let _ = (prefix, after, limit);
        Err(crate::PluginError::unimplemented("this object store cannot list its objects (`list`, ABI 1.3)"))
    }
}

/// One object being written by [`ObjectStoreBasic::put`]: chunks in order, then
/// `finish`. The host calls `abort` when it gives up (client gone, a limit passed), and
/// an aborted upload must leave nothing visible behind.
pub trait ObjectUpload: Send + 'static {
    fn write(&mut self, chunk: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send;
    fn finish(self) -> impl Future<Output = PluginResult<ObjectInfo>> + Send;
    fn abort(self) -> impl Future<Output = ()> + Send;
}
