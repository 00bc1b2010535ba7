//! The time the license, the ledger and the reporter go by. Every "now" of that logic (trial
//! expiry, event times, which hour is closed, claim ages, AWS's 6-hour window) comes from a
//! [`Clock`] instead of `Utc::now()` or SQL `now()`, so tests can pin the hour or move on days.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Test-only: seconds added to the system clock by this process's marketplace logic (and by the
/// test fake), so binary-level tests can run at a chosen minute of the hour or days after the
/// first start. Deliberately read outside `config::Env`: it is not user configuration and is
/// documented in docs/FAKE-MARKETPLACE.md ("A clock the tests control"), not in `.env.example`.
pub const TEST_OFFSET_VAR: &str = "CO_TEST_CLOCK_OFFSET_SECONDS";

#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// Any source of time (tests: a clock they move).
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The system clock shifted by `offset`.
    pub fn offset(offset: chrono::Duration) -> Self {
        Self::from_fn(move || Utc::now() + offset)
    }

    /// The system clock, or the test offset when [`TEST_OFFSET_VAR`] is set in the process.
    pub fn from_process_env() -> anyhow::Result<Self> {
        match std::env::var(TEST_OFFSET_VAR) {
            Err(_) => Ok(Self::system()),
            Ok(raw) if raw.trim().is_empty() => Ok(Self::system()),
            Ok(raw) => {
                let seconds: i64 = raw.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{TEST_OFFSET_VAR} must be a whole number of seconds (test-only)"
                    )
                })?;
                tracing::warn!(
                    seconds,
                    "{TEST_OFFSET_VAR} is set: licensing and metering use a shifted clock (tests only)"
                );
                Ok(Self::offset(chrono::Duration::seconds(seconds)))
            }
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}
