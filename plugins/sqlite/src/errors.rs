use plugin_abi::PluginError;
use rusqlite::ErrorCode as SqliteCode;

/// Maps a SQLite error to the status a client can act on.
pub fn db_error(error: rusqlite::Error) -> PluginError {
    let message = format!("sqlite: {error}");
    let rusqlite::Error::SqliteFailure(failure, _) = &error else {
        return PluginError::internal(message);
    };
    match failure.code {
        SqliteCode::DatabaseBusy | SqliteCode::DatabaseLocked => PluginError::unavailable(format!(
            "{message}: another writer held the database longer than busy_timeout_ms"
        ))
        .with_retryable(true),
        SqliteCode::DiskFull => PluginError::resource_exhausted(message),
        SqliteCode::TooBig => PluginError::resource_exhausted(message),
        SqliteCode::CannotOpen
        | SqliteCode::ReadOnly
        | SqliteCode::PermissionDenied
        | SqliteCode::SystemIoFailure
        | SqliteCode::NotADatabase => PluginError::unavailable(message),
        SqliteCode::DatabaseCorrupt => PluginError::internal(format!(
            "{message}: the database file is damaged; restore it from a backup"
        )),
        _ => PluginError::internal(message),
    }
}
