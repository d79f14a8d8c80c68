//! Small helpers: wall-clock time and random ids.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock time, s since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A random 128-bit id as 32 hex characters.
pub fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// A random short id (64 bits, 16 hex characters), e.g. for epochs.
pub fn random_short_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}
