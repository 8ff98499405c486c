//! [`Clock`]: where the runtime reads the time — the system clock, or a manual clock that
//! tests advance by hand so that durable timers fire without real waiting.

use durable_store::Timestamp;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The runtime's source of time: the time of each orchestration turn and the due check of
/// durable timers.
///
/// ```
/// use durable::Clock;
/// use std::time::{Duration, UNIX_EPOCH};
/// let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(100));
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(105));
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    System,
    Manual(Arc<Manual>),
}

#[derive(Debug)]
struct Manual {
    now: Mutex<Timestamp>,
    changed: watch::Sender<Timestamp>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { kind: Kind::System }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] or [`Clock::set`] moves
    /// it. Durable timers fire when it passes their due time.
    pub fn manual(start: SystemTime) -> Clock {
        let start = Timestamp::from_system_time(start);
        let (changed, _) = watch::channel(start);
        Clock {
            kind: Kind::Manual(Arc::new(Manual {
                now: Mutex::new(start),
                changed,
            })),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        self.timestamp().to_system_time()
    }

    /// Moves a manual clock forward by `duration` (does nothing to the system clock).
    pub fn advance(&self, duration: Duration) {
        if let Kind::Manual(manual) = &self.kind {
            let mut now = manual.now.lock().unwrap_or_else(PoisonError::into_inner);
            *now = now.saturating_add(duration);
            manual.changed.send_replace(*now);
        }
    }

    /// Sets a manual clock to `time`, which may be earlier (does nothing to the system clock).
    pub fn set(&self, time: SystemTime) {
        if let Kind::Manual(manual) = &self.kind {
            let time = Timestamp::from_system_time(time);
            *manual.now.lock().unwrap_or_else(PoisonError::into_inner) = time;
            manual.changed.send_replace(time);
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.kind, Kind::Manual(_))
    }

    pub(crate) fn timestamp(&self) -> Timestamp {
        match &self.kind {
            Kind::System => Timestamp::from_system_time(SystemTime::now()),
            Kind::Manual(manual) => *manual.now.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// The time of an orchestration turn: the clock rounded up to the millisecond, so that
    /// a timer of `d` set in the turn never comes due before `d` has really passed since
    /// the turn began (the timer service fires on the rounded-down time).
    pub(crate) fn turn_timestamp(&self) -> Timestamp {
        match &self.kind {
            Kind::System => {
                let since = SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let millis = since.as_micros().div_ceil(1000);
                Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
            }
            Kind::Manual(_) => self.timestamp(),
        }
    }

    /// Waits until the clock reads `deadline` or later.
    pub(crate) async fn sleep_until(&self, deadline: Timestamp) {
        match &self.kind {
            Kind::System => loop {
                let now = self.timestamp();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(deadline.saturating_duration_since(now)).await;
            },
            Kind::Manual(manual) => {
                let mut changed = manual.changed.subscribe();
                // `wait_for` checks the current value first, so no advance is missed.
                let _ = changed.wait_for(|now| *now >= deadline).await;
            }
        }
    }
}
