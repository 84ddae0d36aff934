use plugin_abi::PluginError;
use redis::RedisError;

/// Maps a Redis error to the status a client can act on.
pub fn plugin_error(error: RedisError) -> PluginError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return PluginError::unavailable(format!("redis is unreachable: {error}"));
    }
    match error.code() {
        Some("OOM") => PluginError::resource_exhausted(format!("redis is out of memory: {error}")),
        Some("WRONGTYPE") => PluginError::failed_precondition(format!(
            "the Redis key holds another type (is key_prefix shared with another namespace?): {error}"
        )),
        // CLUSTERDOWN: a cluster between losing a master and promoting its replica.
        Some("LOADING") | Some("BUSY") | Some("MASTERDOWN") | Some("TRYAGAIN") | Some("CLUSTERDOWN") => {
            PluginError::unavailable(format!("redis cannot serve right now: {error}"))
        }
        _ => PluginError::internal(format!("redis error: {error}")),
    }
}
