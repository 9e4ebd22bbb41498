//! Recording what a phase measured: latency histograms for the whole phase and for each
//! second of it (HdrHistogram, microseconds), counts of orders placed and ended, and errors.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::mix::Path;

/// Longest latency a histogram holds; anything longer is clamped to it.
const MAX_MICROS: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs .. 10 min: a few hundred KiB per histogram at most.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
    histogram.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// One second of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the phase started.
    pub second: u64,
    pub placed: u64,
    /// Sagas that reached their terminal event in this second.
    pub ended: u64,
    pub saga_p50_ms: f64,
    pub saga_p99_ms: f64,
    pub post_p99_ms: f64,
}

#[derive(Debug)]
struct Window {
    placed: u64,
    ended: u64,
    saga: Histogram<u64>,
    post: Histogram<u64>,
}

impl Window {
    fn new() -> Window {
        Window {
            placed: 0,
            ended: 0,
            saga: histogram(),
            post: histogram(),
        }
    }

    fn summary(&self, second: usize) -> Second {
        Second {
            second: second as u64,
            placed: self.placed,
            ended: self.ended,
            saga_p50_ms: Percentiles::of(&self.saga).p50_ms,
            saga_p99_ms: Percentiles::of(&self.saga).p99_ms,
            post_p99_ms: Percentiles::of(&self.post).p99_ms,
        }
    }
}

#[derive(Debug)]
struct Inner {
    placed: u64,
    ended_by_path: BTreeMap<Path, u64>,
    unexpected: u64,
    errors: BTreeMap<String, u64>,
    saga: Histogram<u64>,
    post: Histogram<u64>,
    /// Outbox-to-stream delays of every event stored during the phase.
    stored: Histogram<u64>,
    /// Reaction times by step (`<cause type> → <effect type>`).
    reactions: BTreeMap<String, Histogram<u64>>,
    /// Every second before the current one, summarised: only the current second keeps its
    /// histograms, so a long run does not hold one pair of histograms per second.
    seconds: Vec<Second>,
    current: Window,
}

impl Inner {
    /// Moves on to `second`, summarising the seconds before it. A record that arrives late
    /// for a second already summarised counts in the current one.
    fn advance_to(&mut self, second: usize) {
        while self.seconds.len() < second {
            let finished = std::mem::replace(&mut self.current, Window::new());
            let index = self.seconds.len();
            self.seconds.push(finished.summary(index));
        }
    }
}

/// What a phase has measured so far; shared by the tasks that place and watch orders.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

/// A live view for the progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub placed: u64,
    pub ended: u64,
    pub errors: u64,
    /// Sagas ended in the last full second.
    pub ended_last_second: u64,
    pub saga_p50_ms: f64,
    pub saga_p99_ms: f64,
}

impl Recorder {
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            inner: Mutex::new(Inner {
                placed: 0,
                ended_by_path: BTreeMap::new(),
                unexpected: 0,
                errors: BTreeMap::new(),
                saga: histogram(),
                post: histogram(),
                stored: histogram(),
                reactions: BTreeMap::new(),
                seconds: Vec::new(),
                current: Window::new(),
            }),
        }
    }

    fn with<T>(&self, at: Instant, f: impl FnOnce(&mut Inner) -> T) -> T {
        let second = at.saturating_duration_since(self.started).as_secs() as usize;
        // A poisoned lock only means another task panicked mid-record; the counts stay usable.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.advance_to(second);
        f(&mut inner)
    }

    /// An order was accepted; `latency` from when it was due to be sent to the answer.
    pub fn placed(&self, at: Instant, latency: Duration) {
        self.with(at, |inner| {
            inner.placed += 1;
            record(&mut inner.post, latency);
            inner.current.placed += 1;
            record(&mut inner.current.post, latency);
        });
    }

    /// A saga ended; `latency` from when its order was due to be sent to its terminal event.
    pub fn ended(&self, at: Instant, path: Path, latency: Duration, as_expected: bool) {
        self.with(at, |inner| {
            *inner.ended_by_path.entry(path).or_insert(0) += 1;
            if !as_expected {
                inner.unexpected += 1;
            }
            record(&mut inner.saga, latency);
            inner.current.ended += 1;
            record(&mut inner.current.saga, latency);
        });
    }

    /// An event reached its stream `delay` after it was written to an outbox.
    pub fn stored(&self, delay: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        record(&mut inner.stored, delay);
    }

    /// A service wrote an event (`step` names its cause's type and its own) `delay` after
    /// the event that caused it was stored on its stream.
    pub fn reacted(&self, step: &str, delay: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let histogram = inner
            .reactions
            .entry(step.to_owned())
            .or_insert_with(histogram);
        record(histogram, delay);
    }

    /// Something went wrong; `kind` groups it in the report.
    pub fn error(&self, kind: impl Into<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn live(&self) -> Live {
        let second = Instant::now()
            .saturating_duration_since(self.started)
            .as_secs() as usize;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.advance_to(second);
        let last = inner.seconds.last();
        Live {
            placed: inner.placed,
            ended: inner.ended_by_path.values().sum(),
            errors: inner.errors.values().sum::<u64>() + inner.unexpected,
            ended_last_second: last.map_or(0, |second| second.ended),
            saga_p50_ms: last.map_or(0.0, |second| second.saga_p50_ms),
            saga_p99_ms: last.map_or(0.0, |second| second.saga_p99_ms),
        }
    }

    /// The phase's figures; `measured` is the time orders were being placed. Throughput
    /// counts the sagas that ended within it (those ending while the phase drains are in the
    /// latencies, not the rate).
    pub fn finish(&self, measured: Duration, unfinished: u64) -> PhaseFigures {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ended: u64 = inner.ended_by_path.values().sum();
        let whole_seconds = (measured.as_secs() as usize).max(1);
        let mut seconds = inner.seconds.clone();
        if inner.current.placed + inner.current.ended > 0 {
            seconds.push(inner.current.summary(seconds.len()));
        }
        let ended_within: u64 = seconds
            .iter()
            .take(whole_seconds)
            .map(|second| second.ended)
            .sum();
        PhaseFigures {
            duration_s: measured.as_secs_f64(),
            placed: inner.placed,
            ended,
            ended_per_s: ended_within as f64 / whole_seconds as f64,
            ended_by_path: inner
                .ended_by_path
                .iter()
                .map(|(path, count)| (path.to_string(), *count))
                .collect(),
            unexpected_outcomes: inner.unexpected,
            unfinished,
            errors: inner.errors.clone(),
            saga_latency: Percentiles::of(&inner.saga),
            post_latency: Percentiles::of(&inner.post),
            outbox_to_stream: Percentiles::of(&inner.stored),
            reactions: inner
                .reactions
                .iter()
                .map(|(step, histogram)| (step.clone(), Percentiles::of(histogram)))
                .collect(),
            backlog: Backlog::of(&seconds, whole_seconds),
            seconds,
        }
    }
}

/// Sagas in flight (placed, not yet ended) over a phase: steady when the system keeps up,
/// growing when it falls behind, which a phase's percentiles alone can hide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Backlog {
    /// The mean of the sagas in flight at the end of each second of the load's first half.
    pub first_half: f64,
    /// The same for its second half.
    pub second_half: f64,
    /// The second half held more than twice as many as the first, and over ten more: the
    /// system fell behind. A latency hump moves the count by a few sagas; falling behind, by
    /// a rate's worth each second.
    pub growing: bool,
}

impl Backlog {
    /// From the first `load_seconds` of `seconds` (the load, not the drain after it).
    pub fn of(seconds: &[Second], load_seconds: usize) -> Backlog {
        let mut in_flight = Vec::with_capacity(load_seconds);
        let mut count: i64 = 0;
        for second in seconds.iter().take(load_seconds) {
            count += second.placed as i64 - second.ended as i64;
            in_flight.push(count.max(0) as f64);
        }
        let mean = |values: &[f64]| {
            if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        };
        let (first, second) = in_flight.split_at(in_flight.len() / 2);
        let (first_half, second_half) = (mean(first), mean(second));
        Backlog {
            first_half,
            second_half,
            growing: second_half > 2.0 * first_half && second_half - first_half > 10.0,
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub duration_s: f64,
    pub placed: u64,
    pub ended: u64,
    /// Sagas ended per second of the phase: the throughput.
    pub ended_per_s: f64,
    pub ended_by_path: BTreeMap<String, u64>,
    /// Sagas that ended otherwise than their path should (e.g. a happy order cancelled).
    pub unexpected_outcomes: u64,
    /// Orders accepted whose saga had not ended when the phase gave up waiting.
    pub unfinished: u64,
    pub errors: BTreeMap<String, u64>,
    /// From when the order was due to be sent (not when it was sent: no coordinated
    /// omission) to its terminal event.
    pub saga_latency: Percentiles,
    /// `POST /orders`, from when it was due to be sent to the `202`.
    pub post_latency: Percentiles,
    /// Every event stored on a stream during the phase, from when it was written to an
    /// outbox (its envelope's time) to when its stream stored it (the stream's timestamp).
    pub outbox_to_stream: Percentiles,
    /// Every reaction during the phase, by step (`<cause type> → <effect type>`): from when
    /// the cause was stored on its stream to when the service that consumed it wrote the
    /// effect to its outbox (delivery, the transaction's wait and the handler's work up to
    /// then). A saga's critical path is its steps' reactions and outbox-to-stream delays.
    pub reactions: BTreeMap<String, Percentiles>,
    /// Whether the system kept up: sagas in flight in the first and second half of the load.
    pub backlog: Backlog,
    pub seconds: Vec<Second>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(counts: &[(u64, u64)]) -> Vec<Second> {
        counts
            .iter()
            .enumerate()
            .map(|(index, &(placed, ended))| Second {
                second: index as u64,
                placed,
                ended,
                saga_p50_ms: 0.0,
                saga_p99_ms: 0.0,
                post_p99_ms: 0.0,
            })
            .collect()
    }

    #[test]
    fn a_system_that_keeps_up_has_a_steady_backlog() {
        // 80/s placed; ends lag a little and wobble, as a latency hump makes them.
        let mut counts = vec![(80, 74)];
        counts.extend([(80, 80), (80, 77), (80, 83), (80, 78), (80, 82), (80, 80)]);
        counts.extend([(0, 6)]);
        let backlog = Backlog::of(&seconds(&counts), 7);
        assert!(!backlog.growing, "{backlog:?}");
        assert!(backlog.first_half > 0.0 && backlog.second_half > 0.0);
    }

    #[test]
    fn a_system_that_falls_behind_has_a_growing_backlog() {
        // 80/s placed, 60/s ended: twenty more in flight every second.
        let counts = vec![(80, 60); 10];
        let backlog = Backlog::of(&seconds(&counts), 10);
        assert!(backlog.growing, "{backlog:?}");
        assert_eq!(backlog.first_half, 60.0);
        assert_eq!(backlog.second_half, 160.0);
    }

    #[test]
    fn the_drain_after_the_load_is_left_out() {
        let counts = [(10, 10), (10, 10), (0, 0), (0, 500)];
        let backlog = Backlog::of(&seconds(&counts), 2);
        assert_eq!(backlog, Backlog::default());
    }

    #[test]
    fn a_phase_counts_and_buckets_by_second() {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        recorder.placed(start, Duration::from_millis(2));
        recorder.placed(
            start + Duration::from_millis(1500),
            Duration::from_millis(4),
        );
        recorder.ended(
            start + Duration::from_millis(1600),
            Path::Happy,
            Duration::from_millis(20),
            true,
        );
        recorder.ended(
            start + Duration::from_millis(1700),
            Path::Declined,
            Duration::from_millis(30),
            false,
        );
        recorder.error("http 500");
        let figures = recorder.finish(Duration::from_secs(2), 0);
        assert_eq!((figures.placed, figures.ended), (2, 2));
        assert_eq!(figures.ended_per_s, 1.0);
        assert_eq!(figures.unexpected_outcomes, 1);
        assert_eq!(figures.errors["http 500"], 1);
        assert_eq!(figures.seconds.len(), 2);
        assert_eq!(
            (figures.seconds[0].placed, figures.seconds[0].ended),
            (1, 0)
        );
        assert_eq!(
            (figures.seconds[1].placed, figures.seconds[1].ended),
            (1, 2)
        );
        assert!((figures.saga_latency.p99_ms - 30.0).abs() < 0.1);
    }
}
