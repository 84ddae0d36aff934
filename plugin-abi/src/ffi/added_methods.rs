//! What `#[interface]` generates for a method added in a later minor release, on an
//! interface of its own (outside the table, with no remote calls).

use abi_stable::std_types::RResult;

use crate::ffi::FfiResult;
use crate::{interface, Driver, ErrorCode, PluginResult};

#[interface(manual_remote)]
pub trait Probe: Driver {
    async fn original(&self) -> PluginResult<u64>;
    /// Added later: plugins built before it answer the default.
    async fn added(&self) -> PluginResult<u64> {
        Err(crate::PluginError::unimplemented("added"))
    }
}

/// An FFI object as a plugin built before `added` exports it.
struct BuiltBefore;

impl FfiProbe for BuiltBefore {
    fn original(&self) -> FfiResult<u64> {
        async_ffi::FutureExt::into_ffi(async { RResult::ROk(1) })
    }
}

#[test]
fn an_object_that_predates_a_method_answers_unimplemented_naming_it() {
    let answer = block_on(FfiProbe::added(&BuiltBefore)).into_result();
    let error = answer.expect_err("the default answers an error");
    assert_eq!(error.code(), ErrorCode::Unimplemented);
    assert!(error.message().contains("`added`"), "{error}");
    assert_eq!(block_on(FfiProbe::original(&BuiltBefore)).into_result(), Ok(1));
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}
