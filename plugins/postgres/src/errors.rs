use deadpool_postgres::PoolError;
use plugin_abi::PluginError;

/// Maps a PostgreSQL error to the status a client can act on.
pub fn db_error(error: tokio_postgres::Error) -> PluginError {
    let Some(db) = error.as_db_error() else {
        // No server error: the connection failed or closed.
        // tokio-postgres keeps the cause (refused, TLS certificate, …) in the source chain.
        let mut message = format!("postgres is unreachable: {error}");
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        return PluginError::unavailable(message);
    };
    let code = db.code().code();
    let message = format!("postgres: {} ({code})", db.message());
    match &code[..2] {
        "08" => PluginError::unavailable(message),
        "53" => PluginError::resource_exhausted(message),
        "40" => PluginError::new(plugin_abi::ErrorCode::Aborted, message).with_retryable(true),
        "23" if code == "23505" => PluginError::new(plugin_abi::ErrorCode::AlreadyExists, message),
        "57" if code == "57014" => PluginError::new(plugin_abi::ErrorCode::DeadlineExceeded, message),
        "57" => PluginError::unavailable(message),
        _ => PluginError::internal(message),
    }
}

pub fn pool_error(error: PoolError) -> PluginError {
    match error {
        PoolError::Backend(error) => db_error(error),
        PoolError::Timeout(_) => PluginError::unavailable(
            "postgres: no connection could be had in time (pool exhausted or server unreachable)",
        ),
        other => PluginError::unavailable(format!("postgres: {other}")),
    }
}
