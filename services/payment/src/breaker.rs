//! A circuit breaker for the payment gateway: after a run of consecutive failures it stops
//! calling for a while (failing fast, so a dead gateway costs no timeouts), then lets one
//! probe through, and closes again when the probe succeeds.
//!
//! Hand-written because it is a few lines of state and no widely used crate offers one that
//! fits a single async client; time is passed in so every transition is tested without a clock.

use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe call is in flight; everything else fails fast until it reports.
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    failure_threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(failure_threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: State::Closed {
                consecutive_failures: 0,
            },
            failure_threshold: failure_threshold.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a call may go out now. An open breaker whose time is up lets one probe through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// Reports how an allowed call went.
    pub fn record(&mut self, succeeded: bool, now: Instant) {
        self.state = match (self.state, succeeded) {
            (_, true) => State::Closed {
                consecutive_failures: 0,
            },
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) if consecutive_failures + 1 < self.failure_threshold => State::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            (_, false) => State::Open {
                until: now + self.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_failures() {
        let now = Instant::now();
        let mut breaker = Breaker::new(3, OPEN_FOR);
        for _ in 0..2 {
            assert!(breaker.allow(now));
            breaker.record(false, now);
        }
        assert!(breaker.allow(now));
        breaker.record(false, now);
        assert_eq!(
            breaker.state(),
            State::Open {
                until: now + OPEN_FOR
            }
        );
        assert!(!breaker.allow(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = Instant::now();
        let mut breaker = Breaker::new(2, OPEN_FOR);
        breaker.record(false, now);
        breaker.record(true, now);
        breaker.record(false, now);
        assert!(matches!(breaker.state(), State::Closed { .. }));
    }

    #[test]
    fn after_the_pause_one_probe_decides() {
        let now = Instant::now();
        let mut breaker = Breaker::new(1, OPEN_FOR);
        breaker.record(false, now);
        let later = now + OPEN_FOR;
        assert!(breaker.allow(later), "the probe goes out");
        assert!(!breaker.allow(later), "only one probe at a time");
        breaker.record(false, later);
        assert!(
            !breaker.allow(later + Duration::from_secs(1)),
            "a failed probe reopens"
        );
        let much_later = later + OPEN_FOR;
        assert!(breaker.allow(much_later));
        breaker.record(true, much_later);
        assert!(breaker.allow(much_later), "a good probe closes it");
    }
}
