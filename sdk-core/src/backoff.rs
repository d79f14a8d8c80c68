//! Exponential backoff with full jitter.

/// When to retry a lost connection. Defaults: 1 s base, doubling, 30 s cap, 10 attempts.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ReconnectPolicy {
    /// Delay ceiling of the first attempt, ms.
    pub base_delay_ms: u64,
    /// Largest delay ceiling, ms.
    pub max_delay_ms: u64,
    /// Growth factor of the ceiling per attempt.
    pub factor: f64,
    /// Attempts before giving up (`None` = never give up).
    pub max_attempts: Option<u32>,
    /// A connection that stayed up at least this long resets the attempt count; one that
    /// fails sooner keeps backing off (so a server that accepts then drops is not hammered).
    pub reset_after_ms: u64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
            factor: 2.0,
            max_attempts: Some(10),
            reset_after_ms: 5_000,
        }
    }
}

impl ReconnectPolicy {
    /// The delay ceiling for attempt `attempt` (1-based): `min(max, base * factor^(attempt-1))`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let ceiling = self.base_delay_ms as f64 * self.factor.max(1.0).powi(exp);
        if ceiling.is_finite() {
            (ceiling as u64).min(self.max_delay_ms)
        } else {
            self.max_delay_ms
        }
    }

    /// Full jitter: a uniformly random delay in `[0, ceiling]`.
    pub fn delay_ms(&self, attempt: u32, rng: &mut fastrand::Rng) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        rng.u64(0..=ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap() {
        let p = ReconnectPolicy::default();
        let c: Vec<u64> = (1..=7).map(|a| p.ceiling_ms(a)).collect();
        assert_eq!(c, vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(p.ceiling_ms(1000), 30_000);
    }

    #[test]
    fn jitter_spreads_within_ceiling() {
        let p = ReconnectPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<u64> = (0..200).map(|_| p.delay_ms(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= 8_000));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "jitter must spread retries");
        assert!(delays.iter().any(|d| *d < 2_000) && delays.iter().any(|d| *d > 6_000));
    }
}
