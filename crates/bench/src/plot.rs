//! The report's picture: throughput and latency percentiles over a phase, second by second,
//! as an SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::PhaseFigures;

/// Draws `figures` (one phase) to an SVG file at `path`, titled `title`.
pub fn draw(path: &Path, title: &str, figures: &PhaseFigures) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(300);
    let seconds = figures.seconds.len().max(1) as u64;

    let rate_max = figures
        .seconds
        .iter()
        .map(|s| s.placed.max(s.ended))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut rates = ChartBuilder::on(&top)
        .margin(10)
        .caption("per second: orders placed, sagas ended", ("sans-serif", 15))
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..seconds, 0f64..rate_max)?;
    rates
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("per second")
        .draw()?;
    let series = |value: fn(&crate::stats::Second) -> f64| {
        figures
            .seconds
            .iter()
            .map(move |s| (s.second, value(s)))
            .collect::<Vec<_>>()
    };
    rates
        .draw_series(LineSeries::new(series(|s| s.placed as f64), &BLUE))?
        .label("placed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    rates
        .draw_series(LineSeries::new(series(|s| s.ended as f64), &GREEN))?
        .label("ended")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    rates
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    let latency_max = figures
        .seconds
        .iter()
        .map(|s| s.saga_p99_ms.max(s.post_p99_ms))
        .fold(1.0, f64::max)
        * 1.1;
    let mut latencies = ChartBuilder::on(&bottom)
        .margin(10)
        .caption(
            "latency per second (ms): saga p50 and p99, POST /orders p99",
            ("sans-serif", 15),
        )
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..seconds, 0f64..latency_max)?;
    latencies
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()?;
    for (label, color, value) in [
        (
            "saga p50",
            GREEN,
            (|s| s.saga_p50_ms) as fn(&crate::stats::Second) -> f64,
        ),
        ("saga p99", RED, |s| s.saga_p99_ms),
        ("POST p99", BLUE, |s| s.post_p99_ms),
    ] {
        latencies
            .draw_series(LineSeries::new(series(value), &color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    latencies
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
