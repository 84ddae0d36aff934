//! 1.2: an object being written, chunk by chunk, from the host into a plugin. The host
//! holds the object; each `write` is one call carrying one chunk, so a large object never
//! crosses the boundary in one buffer. Dropping it unfinished aborts the upload.

use std::sync::Arc;

use abi_stable::{
    sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RErr, ROk, RVec},
};
use tokio::sync::Mutex;

use super::bridge::{bridge, PluginRuntime};
use super::{FfiObjectInfo, FfiResult};
use crate::{ObjectUpload, PluginError};

#[sabi_trait]
pub trait FfiObjectUpload: Send + Sync {
    /// Appends one chunk. Calls are made one after another, never at once.
    fn write(&self, chunk: RVec<u8>) -> FfiResult<()>;
    /// Completes the upload: the object becomes visible, whole.
    #[sabi(last_prefix_field)]
    fn finish(&self) -> FfiResult<FfiObjectInfo>;
}

pub(crate) type ObjectUploadBox = FfiObjectUpload_TO<'static, RBox<()>>;

/// The plugin-side object: the driver's upload until `finish` takes it.
struct Upload<U: ObjectUpload> {
    upload: Arc<Mutex<Option<U>>>,
    runtime: Arc<PluginRuntime>,
}

fn already_finished() -> PluginError {
    PluginError::failed_precondition("the upload has already finished or failed")
}

impl<U: ObjectUpload> FfiObjectUpload for Upload<U> {
    fn write(&self, chunk: RVec<u8>) -> FfiResult<()> {
        let upload = self.upload.clone();
        bridge(&self.runtime, async move {
            let mut slot = upload.lock().await;
            let Some(current) = slot.as_mut() else { return RErr(already_finished()) };
            match current.write(chunk.into_vec()).await {
                Ok(()) => ROk(()),
                Err(error) => {
                    // A failed write leaves the object unknowable: abort it now.
                    if let Some(failed) = slot.take() {
                        failed.abort().await;
                    }
                    RErr(error)
                }
            }
        })
    }

    fn finish(&self) -> FfiResult<FfiObjectInfo> {
        let upload = self.upload.clone();
        bridge(&self.runtime, async move {
            let Some(current) = upload.lock().await.take() else { return RErr(already_finished()) };
            match current.finish().await {
                Ok(info) => ROk(info.into()),
                Err(error) => RErr(error),
            }
        })
    }
}

impl<U: ObjectUpload> Drop for Upload<U> {
    fn drop(&mut self) {
        let upload = self.upload.clone();
        // The task keeps the runtime alive until the abort ran: this may be the last
        // thing holding it (an instance retired by a reload). Dropping it there never
        // blocks (`PluginRuntime` shuts down in the background).
        let runtime = self.runtime.clone();
        // Unfinished (the host gave up): abort on the plugin's runtime, after any write
        // still running lets go of the upload.
        self.runtime.handle().spawn(async move {
            if let Some(unfinished) = upload.lock().await.take() {
                unfinished.abort().await;
            }
            drop(runtime);
        });
    }
}

pub(crate) fn object_upload<U: ObjectUpload>(runtime: &Arc<PluginRuntime>, upload: U) -> ObjectUploadBox {
    let object = Upload { upload: Arc::new(Mutex::new(Some(upload))), runtime: runtime.clone() };
    FfiObjectUpload_TO::from_value(object, TD_Opaque)
}
