//! Lua scripts: each write changes value, version, TTL and index in one step.
//! KEYS[1] = the key's hash, KEYS[2] = the index; ARGV[1] = the user key.
//! WRITE also takes KEYS[3] = the version counter: versions come from one counter per
//! prefix, so they grow on every write and are never reused, even across a delete.

use std::sync::LazyLock;

use redis::Script;

/// ARGV[2] = value, ARGV[3] = TTL in ms (0 = none), ARGV[4] = expected version (-1 = any).
/// Returns {written (0/1), version}: the new version, or the current one on a mismatch.
pub static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local current = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
        local expected = tonumber(ARGV[4])
        if expected >= 0 and current ~= expected then
            return {0, current}
        end
        local version = redis.call('INCR', KEYS[3])
        redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', version)
        local ttl = tonumber(ARGV[3])
        if ttl > 0 then
            redis.call('PEXPIRE', KEYS[1], ttl)
        else
            redis.call('PERSIST', KEYS[1])
        end
        redis.call('ZADD', KEYS[2], 0, ARGV[1])
        return {1, version}
        ",
    )
});

/// ARGV[2] = expected version (-1 = any). Returns {deleted-or-allowed (0/1), version before}.
pub static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local current = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
        local expected = tonumber(ARGV[2])
        if expected >= 0 and current ~= expected then
            return {0, current}
        end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return {1, current}
        ",
    )
});
