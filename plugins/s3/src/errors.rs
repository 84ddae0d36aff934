use plugin_abi::PluginError;

/// Maps an object store error to the status a client can act on.
pub fn store_error(what: &str, error: object_store::Error) -> PluginError {
    use object_store::Error;
    let message = format!("s3: {what}: {error}");
    match error {
        Error::NotFound { .. } => PluginError::not_found(message),
        Error::AlreadyExists { .. } | Error::Precondition { .. } | Error::NotModified { .. } => {
            PluginError::failed_precondition(message)
        }
        Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => PluginError::failed_precondition(
            format!("{message}: check access_key_id, secret_access_key and the bucket's policy"),
        ),
        Error::NotSupported { .. } | Error::NotImplemented { .. } => PluginError::unimplemented(message),
        // Connection failures, timeouts and 5xx answers surface as Generic.
        _ => PluginError::unavailable(message).with_retryable(true),
    }
}
