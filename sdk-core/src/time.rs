//! Time as the core sees it: always passed in by the driver.

/// The two clocks a driver passes with every input.
///
/// `mono_ms` drives timers (it never goes backwards; `performance.now()` in a browser,
/// `Instant` natively). `wall_ms` is Unix time in ms, used for token expiry, message
/// expiry and to notice that the machine slept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic milliseconds (any origin).
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

impl Now {
    /// Both clocks at once.
    pub fn new(mono_ms: u64, wall_ms: u64) -> Self {
        Self { mono_ms, wall_ms }
    }

    /// This instant plus `ms` on both clocks (handy in tests).
    pub fn plus(self, ms: u64) -> Self {
        Self {
            mono_ms: self.mono_ms + ms,
            wall_ms: self.wall_ms + ms,
        }
    }
}
