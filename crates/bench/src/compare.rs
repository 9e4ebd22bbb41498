//! Several runs summed up: each figure's median and range per build, for one build run
//! again (`--repeat`) or two run in turns (`--versus`). On a shared machine one build's
//! throughput moves by up to 20% within minutes, so a change shows only next to runs of the
//! other build taken in turns, and only when it is larger than their ranges.

use std::fmt::Write as _;

use serde::Serialize;

use crate::procs::GENERATOR;
use crate::{Phase, Report};

/// The median and range of one figure over a build's runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// `None` when no run had the figure.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Spread {
            median,
            min,
            max,
            runs: sorted.len(),
        })
    }
}

/// One figure across the builds, in the order of [`Comparison::builds`].
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub spreads: Vec<Option<Spread>>,
    /// With two builds: the second's median against the first's.
    pub change: Option<Change>,
}

/// How the second build's figure differs from the first's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// The medians' difference, in percent of the first.
    pub percent: f64,
    /// Whether the runs can tell it from the machine's noise: `None` with a single run of
    /// either build, else whether the two ranges do not overlap.
    pub apart: Option<bool>,
}

impl Change {
    fn between(first: Spread, second: Spread) -> Change {
        let percent = if first.median == 0.0 {
            0.0
        } else {
            100.0 * (second.median - first.median) / first.median.abs()
        };
        let apart = (first.runs > 1 && second.runs > 1)
            .then_some(second.min > first.max || second.max < first.min);
        Change { percent, apart }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.apart {
            Some(true) => "apart",
            Some(false) => "overlap",
            None => "one run",
        };
        write!(f, "{:+.0}% {verdict}", self.percent)
    }
}

/// Every compared figure of every build.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub builds: Vec<String>,
    pub rows: Vec<Row>,
}

type Figure = (&'static str, fn(&Report) -> Option<f64>);

/// What is compared: what the targets are stated in, and what explains them.
const FIGURES: [Figure; 10] = [
    ("closed loop: sagas/s", |r| {
        phase(r, "closed").map(|p| p.figures.ended_per_s)
    }),
    ("closed loop: CPU ms a saga", |r| {
        phase(r, "closed").and_then(cpu_ms_per_saga)
    }),
    ("open loop: sagas/s", |r| {
        phase(r, "open").map(|p| p.figures.ended_per_s)
    }),
    ("open loop: CPU ms a saga", |r| {
        phase(r, "open").and_then(cpu_ms_per_saga)
    }),
    ("open loop: saga p50 ms", |r| {
        phase(r, "open").map(|p| p.figures.saga_latency.p50_ms)
    }),
    ("open loop: saga p99 ms", |r| {
        phase(r, "open").map(|p| p.figures.saga_latency.p99_ms)
    }),
    ("open loop: POST p99 ms", |r| {
        phase(r, "open").map(|p| p.figures.post_latency.p99_ms)
    }),
    ("open loop: to stream p99 ms", |r| {
        phase(r, "open").map(|p| p.figures.outbox_to_stream.p99_ms)
    }),
    ("bound: sagas/s", |r| {
        r.bound.as_ref().map(|b| b.sagas_per_s)
    }),
    ("achieved / bound", |r| r.achieved_over_bound),
];

fn phase<'a>(report: &'a Report, kind: &str) -> Option<&'a Phase> {
    report
        .phases
        .iter()
        .find(|phase| phase.kind == kind && phase.figures.ended > 0)
}

/// The system's CPU over the sagas the phase ended: every process but the generator's (which
/// also holds the gateway simulator when `bench` runs the system).
fn cpu_ms_per_saga(phase: &Phase) -> Option<f64> {
    let cpu_s: f64 = phase
        .processes
        .iter()
        .filter(|usage| usage.program != GENERATOR)
        .map(|usage| usage.cpu_s)
        .sum();
    (phase.figures.ended > 0).then(|| 1000.0 * cpu_s / phase.figures.ended as f64)
}

/// Sums up `runs`, each the index of its build in `builds` and one run's report.
pub fn compare(builds: &[String], runs: &[(usize, Report)]) -> Comparison {
    let rows = FIGURES
        .iter()
        .map(|(figure, value)| {
            let spreads: Vec<Option<Spread>> = (0..builds.len())
                .map(|build| {
                    let values: Vec<f64> = runs
                        .iter()
                        .filter(|(b, _)| *b == build)
                        .filter_map(|(_, report)| value(report))
                        .collect();
                    Spread::of(&values)
                })
                .collect();
            let change = match spreads[..] {
                [Some(first), Some(second)] => Some(Change::between(first, second)),
                _ => None,
            };
            Row {
                figure,
                spreads,
                change,
            }
        })
        .filter(|row| row.spreads.iter().any(Option::is_some))
        .collect();
    Comparison {
        builds: builds.to_vec(),
        rows,
    }
}

/// The comparison as a table: per build, each figure's median and range.
pub fn render(comparison: &Comparison) -> String {
    let mut out = String::new();
    let width = comparison
        .rows
        .iter()
        .map(|row| row.figure.len())
        .max()
        .unwrap_or(0);
    for (index, build) in comparison.builds.iter().enumerate() {
        let _ = writeln!(out, "build {}: {build}", index + 1);
    }
    let _ = write!(out, "{:width$}", "");
    for index in 0..comparison.builds.len() {
        let _ = write!(
            out,
            "  {:>28}",
            format!("build {}: median (range)", index + 1)
        );
    }
    let two = comparison.builds.len() == 2;
    if two {
        let _ = write!(out, "  {:>18}", "2 against 1");
    }
    out.push('\n');
    for row in &comparison.rows {
        let _ = write!(out, "{:width$}", row.figure);
        for spread in &row.spreads {
            let cell = match spread {
                Some(s) if s.runs > 1 => {
                    format!("{} ({}–{})", number(s.median), number(s.min), number(s.max))
                }
                Some(s) => number(s.median),
                None => "-".to_owned(),
            };
            let _ = write!(out, "  {cell:>28}");
        }
        if let Some(change) = row.change {
            let _ = write!(out, "  {:>18}", change.to_string());
        }
        out.push('\n');
    }
    out
}

/// Three significant figures or so: 0.41, 7.3, 152.
fn number(value: f64) -> String {
    match value.abs() {
        v if v < 1.0 => format!("{value:.2}"),
        v if v < 100.0 => format!("{value:.1}"),
        _ => format!("{value:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let spread = Spread::of(&[130.0, 118.0, 122.0, 135.0]).expect("values");
        assert_eq!(spread.median, 126.0);
        assert_eq!((spread.min, spread.max, spread.runs), (118.0, 135.0, 4));
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]).map(|s| s.median), Some(2.0));
    }

    #[test]
    fn no_values_no_spread() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }

    #[test]
    fn a_change_is_told_apart_only_when_the_ranges_do_not_overlap() {
        let first = Spread::of(&[100.0, 110.0]).expect("values");
        let overlapping = Spread::of(&[108.0, 120.0]).expect("values");
        let apart = Spread::of(&[125.0, 131.0]).expect("values");
        assert_eq!(
            Change::between(first, overlapping).to_string(),
            "+9% overlap"
        );
        assert_eq!(Change::between(first, apart).to_string(), "+22% apart");
    }

    #[test]
    fn a_single_run_tells_nothing_apart() {
        let one = Spread::of(&[100.0]).expect("values");
        let other = Spread::of(&[150.0]).expect("values");
        assert_eq!(Change::between(one, other).to_string(), "+50% one run");
    }

    #[test]
    fn numbers_keep_about_three_figures() {
        assert_eq!(number(0.4123), "0.41");
        assert_eq!(number(7.345), "7.3");
        assert_eq!(number(152.4), "152");
    }
}
