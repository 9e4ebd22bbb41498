//! The saga overview, `GET /dashboard`: one server-rendered HTML page (inline CSS and SVG, no
//! script, reloaded every 5 s) of what the orders table says about recent sagas.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use runtime::auth::Caller;
use runtime::http::{ApiError, ErrorBody};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::Status;

/// Tiles, reasons and durations cover sagas placed or ended this long ago at most.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Width of one throughput bar.
const BUCKET: Duration = Duration::from_secs(10);
/// Throughput bars: ten minutes of them, the last one still filling.
const BUCKETS: u32 = 60;
/// Orders listed at the bottom of the page.
const RECENT_ORDERS: i64 = 20;

const TERMINAL: [Status; 3] = [Status::Completed, Status::Rejected, Status::Cancelled];
const OPEN: [Status; 4] = [
    Status::Pending,
    Status::Reserved,
    Status::Paid,
    Status::Cancelling,
];

/// Everything the page shows, read in one snapshot of the orders table.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// The database's clock when the snapshot was taken.
    pub read_at: DateTime<Utc>,
    /// Orders placed within [`WINDOW`].
    pub placed: i64,
    /// Sagas ended within [`WINDOW`], by terminal status and reason.
    pub outcomes: Vec<Outcome>,
    /// Saga durations of the sagas ended within [`WINDOW`], per terminal status that has any.
    pub durations: Vec<Durations>,
    /// Every non-terminal status, with zeros when no order has it.
    pub in_flight: Vec<InFlight>,
    /// Sagas ended per [`BUCKET`], oldest first.
    pub throughput: Vec<Bucket>,
    /// The latest orders, newest first.
    pub recent: Vec<RecentOrder>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub reason: Option<String>,
    pub count: i64,
}

/// Percentiles of `updated_at - created_at`, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Durations {
    pub status: Status,
    pub count: i64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub status: Status,
    pub count: i64,
    /// Of `count`, those whose deadline has passed.
    pub past_deadline: i64,
    /// Age of the oldest, 0 when there is none.
    pub oldest_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub completed: i64,
    pub rejected: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecentOrder {
    pub order_id: Uuid,
    pub status: Status,
    pub reason: Option<String>,
    pub placed_seconds_ago: f64,
    /// Placed to terminal; for an open order, placed to now.
    pub duration_seconds: f64,
    /// The second field of the order's `traceparent`, if it has one.
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DashboardState {
    pool: PgPool,
    trace_ui_url: String,
}

/// `GET /dashboard`; `trace_ui_url` is where order traces are linked to
/// (`<trace_ui_url>/trace/<trace id>`).
pub fn routes(pool: PgPool, trace_ui_url: String) -> OpenApiRouter {
    api().with_state(DashboardState { pool, trace_ui_url })
}

/// The route, registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<DashboardState> {
    OpenApiRouter::new().routes(routes!(dashboard))
}

/// Shows the saga overview.
///
/// A page for people, which reloads itself every 5 s.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = runtime::openapi::OPERATIONS,
    responses(
        (status = 200, description = "The page", content_type = "text/html; charset=utf-8",
            body = String, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn dashboard(
    State(state): State<DashboardState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    // Every customer's orders, in aggregate and by trace: an operator's page.
    caller.require_admin()?;
    let overview = read_overview(&state.pool).await?;
    let page = render(&overview, &state.trace_ui_url);
    // Every reload must show fresh figures, never a cached page.
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response())
}

/// Reads the overview in one read-only repeatable-read transaction, so that every figure on
/// the page comes from the same snapshot (and the same `now()`) and they add up.
pub async fn read_overview(pool: &PgPool) -> Result<Overview, sqlx::Error> {
    let terminal: Vec<&str> = TERMINAL.iter().map(|status| status.as_str()).collect();
    let open: Vec<&str> = OPEN.iter().map(|status| status.as_str()).collect();
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;

    let (read_at, placed): (DateTime<Utc>, i64) =
        sqlx::query_as("SELECT now(), count(*) FROM orders WHERE created_at > now() - $1")
            .bind(WINDOW)
            .fetch_one(&mut *tx)
            .await?;

    let outcome_rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT status, reason, count(*) FROM orders \
         WHERE status = ANY($1) AND updated_at > now() - $2 \
         GROUP BY status, reason",
    )
    .bind(&terminal)
    .bind(WINDOW)
    .fetch_all(&mut *tx)
    .await?;

    let duration_rows: Vec<(String, i64, f64, f64, f64)> = sqlx::query_as(
        "SELECT status, count(*), \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM updated_at - created_at)::float8), \
         percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM updated_at - created_at)::float8), \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM updated_at - created_at)::float8) \
         FROM orders WHERE status = ANY($1) AND updated_at > now() - $2 GROUP BY status",
    )
    .bind(&terminal)
    .bind(WINDOW)
    .fetch_all(&mut *tx)
    .await?;

    let in_flight_rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "SELECT status, count(*), count(*) FILTER (WHERE deadline_at < now()), \
         EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
         FROM orders WHERE status = ANY($1) GROUP BY status",
    )
    .bind(&open)
    .fetch_all(&mut *tx)
    .await?;

    // Buckets are aligned to the wall clock rather than to now(), so that a bar keeps its
    // height from one reload to the next; every bucket is listed, empty ones as zeros.
    let throughput_rows: Vec<(DateTime<Utc>, i64, i64, i64)> = sqlx::query_as(
        "WITH buckets AS ( \
             SELECT generate_series(date_bin($1, now(), timestamptz 'epoch') - $2, \
                                    date_bin($1, now(), timestamptz 'epoch'), $1) AS start \
         ), ended AS ( \
             SELECT date_bin($1, updated_at, timestamptz 'epoch') AS start, status FROM orders \
             WHERE status = ANY($3) AND updated_at >= date_bin($1, now(), timestamptz 'epoch') - $2 \
         ) \
         SELECT buckets.start, \
                count(ended.status) FILTER (WHERE ended.status = 'completed'), \
                count(ended.status) FILTER (WHERE ended.status = 'rejected'), \
                count(ended.status) FILTER (WHERE ended.status = 'cancelled') \
         FROM buckets LEFT JOIN ended USING (start) \
         GROUP BY buckets.start ORDER BY buckets.start",
    )
    .bind(BUCKET)
    .bind(BUCKET * (BUCKETS - 1))
    .bind(&terminal)
    .fetch_all(&mut *tx)
    .await?;

    // Order ids are UUIDv7s minted when the order is placed, so the newest orders are the
    // highest ids: the primary key's index finds them without sorting the whole table.
    let recent_rows: Vec<RecentRow> = sqlx::query_as(
        "SELECT order_id, status, reason, \
             EXTRACT(EPOCH FROM now() - created_at)::float8, \
             EXTRACT(EPOCH FROM CASE WHEN status = ANY($1) THEN updated_at ELSE now() END \
                                - created_at)::float8, \
             NULLIF(split_part(traceparent, '-', 2), '') \
             FROM orders ORDER BY order_id DESC LIMIT $2",
    )
    .bind(&terminal)
    .bind(RECENT_ORDERS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let outcomes = outcome_rows
        .into_iter()
        .map(|(status, reason, count)| {
            Ok(Outcome {
                status: status_of(&status)?,
                reason,
                count,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut durations = duration_rows
        .into_iter()
        .map(|(status, count, p50, p90, p99)| {
            Ok(Durations {
                status: status_of(&status)?,
                count,
                p50,
                p90,
                p99,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    durations.sort_by_key(|row| TERMINAL.iter().position(|status| *status == row.status));
    let in_flight = OPEN
        .iter()
        .map(|status| {
            let row = in_flight_rows
                .iter()
                .find(|(name, ..)| name == status.as_str());
            InFlight {
                status: *status,
                count: row.map_or(0, |row| row.1),
                past_deadline: row.map_or(0, |row| row.2),
                oldest_seconds: row.map_or(0.0, |row| row.3.max(0.0)),
            }
        })
        .collect();
    let throughput = throughput_rows
        .into_iter()
        .map(|(start, completed, rejected, cancelled)| Bucket {
            start,
            completed,
            rejected,
            cancelled,
        })
        .collect();
    let recent = recent_rows
        .into_iter()
        .map(
            |(order_id, status, reason, placed_seconds_ago, duration_seconds, trace_id)| {
                Ok(RecentOrder {
                    order_id,
                    status: status_of(&status)?,
                    reason,
                    placed_seconds_ago,
                    duration_seconds,
                    trace_id,
                })
            },
        )
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Overview {
        read_at,
        placed,
        outcomes,
        durations,
        in_flight,
        throughput,
        recent,
    })
}

/// Id, status, reason, seconds since placed, duration in seconds, trace id.
type RecentRow = (Uuid, String, Option<String>, f64, f64, Option<String>);

fn status_of(text: &str) -> Result<Status, sqlx::Error> {
    Status::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown order status {text:?}").into()))
}

// Rendering: pure functions of an `Overview`, tested without a database.

/// The whole page. Every string that comes from the database or the configuration is
/// escaped.
pub fn render(overview: &Overview, trace_ui_url: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"5\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Saga overview · order service</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>Saga overview</h1><p>order service · read at {read_at} UTC · reloads every 5 s · \
         tiles, reasons and durations cover the last {window} minutes</p></header>\n\
         {tiles}\n{throughput}\n<div class=\"columns\">\n{reasons}\n{durations}\n{in_flight}\n</div>\n\
         {recent}\n</body>\n</html>\n",
        read_at = overview.read_at.format("%H:%M:%S"),
        window = WINDOW.as_secs() / 60,
        tiles = render_tiles(overview),
        throughput = render_throughput(&overview.throughput),
        reasons = render_reasons(&overview.outcomes),
        durations = render_durations(&overview.durations),
        in_flight = render_in_flight(&overview.in_flight),
        recent = render_recent(&overview.recent, trace_ui_url),
    )
}

const STYLE: &str = "
:root { --completed: #2f9e44; --rejected: #f08c00; --cancelled: #e03131; --open: #1c7ed6;
        --cancelling: #9c36b5; --ink: #212529; --muted: #6c757d; --line: #e9ecef; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 28px; background: #f5f6f8; color: var(--ink);
       font: 14px/1.35 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; }
header { display: flex; align-items: baseline; gap: 16px; margin-bottom: 12px; }
h1 { font-size: 22px; margin: 0; }
header p { margin: 0; color: var(--muted); }
h2 { font-size: 15px; margin: 0 0 10px; }
h2 small { font-weight: normal; color: var(--muted); margin-left: 8px; }
.card { background: #fff; border: 1px solid #dee2e6; border-radius: 8px; padding: 12px 16px;
        margin-bottom: 12px; }
.tiles { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 12px; }
.tile { background: #fff; border: 1px solid #dee2e6; border-top: 4px solid var(--muted);
        border-radius: 8px; padding: 10px 14px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.tile b { display: block; font-size: 32px; line-height: 1.2; font-variant-numeric: tabular-nums; }
.tile .note { color: var(--muted); font-size: 12px; }
.tile.completed { border-top-color: var(--completed); }
.tile.rejected { border-top-color: var(--rejected); }
.tile.cancelled { border-top-color: var(--cancelled); }
.tile.open { border-top-color: var(--open); }
.tile.stuck { border-top-color: #adb5bd; }
.tile.stuck.alert { border-top-color: var(--cancelled); background: #fff5f5; }
.tile.stuck.alert b { color: var(--cancelled); }
.columns { display: grid; grid-template-columns: 1.25fr 1fr 1fr; gap: 12px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
     border-bottom: 1px solid #dee2e6; padding: 3px 8px 3px 0; }
td { border-bottom: 1px solid var(--line); padding: 3px 8px 3px 0; white-space: nowrap; }
tr:last-child td { border-bottom: none; }
td.number, th.number { text-align: right; }
td.bar { width: 35%; }
.bar div { height: 10px; border-radius: 3px; min-width: 2px; }
.empty { color: var(--muted); font-style: italic; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
         line-height: 18px; color: #fff; background: var(--open); }
.badge.completed { background: var(--completed); }
.badge.rejected { background: var(--rejected); }
.badge.cancelled { background: var(--cancelled); }
.badge.cancelling { background: var(--cancelling); }
.open-duration { color: var(--muted); font-style: italic; }
.legend { display: inline-flex; gap: 14px; margin-left: 16px; font-weight: normal;
          font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
            margin-right: 4px; vertical-align: -1px; }
#throughput-summary { margin: 2px 0 0; color: var(--muted); font-size: 12px; }
.alert-text { color: var(--cancelled); font-weight: 600; }
a { color: var(--open); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 12px ui-monospace, 'DejaVu Sans Mono', monospace; }
svg text { font: 11px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif;
           fill: var(--muted); }
";

fn render_tiles(overview: &Overview) -> String {
    let ended = |status: Status| -> i64 {
        overview
            .outcomes
            .iter()
            .filter(|outcome| outcome.status == status)
            .map(|outcome| outcome.count)
            .sum()
    };
    let (completed, rejected, cancelled) = (
        ended(Status::Completed),
        ended(Status::Rejected),
        ended(Status::Cancelled),
    );
    let total_ended = completed + rejected + cancelled;
    let share = |count: i64| match total_ended {
        0 => "no saga ended".to_owned(),
        total => format!("{}% of sagas ended", percent(count, total)),
    };
    let in_flight: i64 = overview.in_flight.iter().map(|row| row.count).sum();
    let stuck: i64 = overview.in_flight.iter().map(|row| row.past_deadline).sum();
    let window = WINDOW.as_secs() / 60;
    let tiles = [
        tile(
            "placed",
            "",
            "Placed",
            overview.placed,
            &format!("last {window} min"),
        ),
        tile(
            "completed",
            "completed",
            "Completed",
            completed,
            &share(completed),
        ),
        tile(
            "rejected",
            "rejected",
            "Rejected",
            rejected,
            &share(rejected),
        ),
        tile(
            "cancelled",
            "cancelled",
            "Cancelled",
            cancelled,
            &share(cancelled),
        ),
        tile("in-flight", "open", "In flight", in_flight, "now"),
        tile(
            "stuck",
            if stuck > 0 { "stuck alert" } else { "stuck" },
            "Stuck",
            stuck,
            "now, open past deadline",
        ),
    ];
    format!("<section class=\"tiles\">{}</section>", tiles.concat())
}

fn tile(id: &str, class: &str, label: &str, value: i64, note: &str) -> String {
    format!(
        "<div class=\"tile {class}\"><span class=\"label\">{label}</span>\
         <b id=\"tile-{id}\">{value}</b><span class=\"note\">{note}</span></div>",
        note = escape(note),
    )
}

/// `count` as a whole percentage of `total` (rounded), 0 when `total` is 0.
fn percent(count: i64, total: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    (count as f64 * 100.0 / total as f64).round() as i64
}

const CHART_WIDTH: f64 = 1180.0;
const CHART_HEIGHT: f64 = 190.0;
const CHART_LEFT: f64 = 36.0;
/// Room for the last label, centred under the newest bar.
const CHART_RIGHT: f64 = 14.0;
const CHART_TOP: f64 = 8.0;
const CHART_BOTTOM: f64 = 22.0;

fn render_throughput(buckets: &[Bucket]) -> String {
    let sum = |of: fn(&Bucket) -> i64| -> i64 { buckets.iter().map(of).sum() };
    let (completed, rejected, cancelled) = (
        sum(|bucket| bucket.completed),
        sum(|bucket| bucket.rejected),
        sum(|bucket| bucket.cancelled),
    );
    let span_minutes = BUCKET.as_secs() * u64::from(BUCKETS) / 60;
    let summary = format!(
        "<p id=\"throughput-summary\">{} sagas ended in the last {span_minutes} minutes: \
         {completed} completed · {rejected} rejected · {cancelled} cancelled</p>",
        completed + rejected + cancelled
    );
    format!(
        "<section class=\"card\"><h2>Throughput<small>sagas ended per {} s, stacked by outcome</small>\
         <span class=\"legend\"><span><i style=\"background:var(--completed)\"></i>completed</span>\
         <span><i style=\"background:var(--rejected)\"></i>rejected</span>\
         <span><i style=\"background:var(--cancelled)\"></i>cancelled</span></span></h2>\
         {chart}{summary}</section>",
        BUCKET.as_secs(),
        chart = throughput_chart(buckets),
    )
}

/// The stacked bar chart as inline SVG: one bar per bucket, oldest on the left.
fn throughput_chart(buckets: &[Bucket]) -> String {
    let right = CHART_WIDTH - CHART_RIGHT;
    let plot_width = right - CHART_LEFT;
    let plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM;
    let baseline = CHART_TOP + plot_height;
    let tallest = buckets
        .iter()
        .map(|bucket| bucket.completed + bucket.rejected + bucket.cancelled)
        .max()
        .unwrap_or(0);
    let step = axis_step(tallest);
    let top = (tallest.max(1) + step - 1) / step * step;
    let y_of = |value: i64| baseline - value as f64 / top as f64 * plot_height;

    let mut svg = format!(
        "<svg viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" width=\"100%\" role=\"img\" \
         aria-label=\"sagas ended per {} seconds\">",
        BUCKET.as_secs()
    );
    let mut value = 0;
    while value <= top {
        let y = y_of(value);
        svg.push_str(&format!(
            "<line x1=\"{CHART_LEFT}\" x2=\"{right}\" y1=\"{y:.1}\" y2=\"{y:.1}\" \
             stroke=\"#e9ecef\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            CHART_LEFT - 6.0,
            y + 4.0
        ));
        value += step;
    }
    let slot = plot_width / buckets.len().max(1) as f64;
    let bar_width = (slot * 0.72).max(1.0);
    for (index, bucket) in buckets.iter().enumerate() {
        let x = CHART_LEFT + index as f64 * slot + (slot - bar_width) / 2.0;
        let mut group = format!(
            "<g><title>{}–{} UTC: {} completed, {} rejected, {} cancelled</title>",
            bucket.start.format("%H:%M:%S"),
            (bucket.start + chrono::Duration::seconds(BUCKET.as_secs() as i64)).format("%H:%M:%S"),
            bucket.completed,
            bucket.rejected,
            bucket.cancelled
        );
        let mut stacked = 0;
        for (count, colour) in [
            (bucket.completed, "var(--completed)"),
            (bucket.rejected, "var(--rejected)"),
            (bucket.cancelled, "var(--cancelled)"),
        ] {
            if count == 0 {
                continue;
            }
            let (from, to) = (y_of(stacked), y_of(stacked + count));
            group.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{to:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\" \
                 style=\"fill:{colour}\"/>",
                from - to
            ));
            stacked += count;
        }
        group.push_str("</g>");
        svg.push_str(&group);
        // A label every two minutes, counted back from the newest bucket.
        let buckets_back = buckets.len() - 1 - index;
        let seconds_back = buckets_back as u64 * BUCKET.as_secs();
        if seconds_back.is_multiple_of(120) {
            let label = match seconds_back {
                0 => "now".to_owned(),
                seconds => format!("−{} min", seconds / 60),
            };
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x + bar_width / 2.0,
                CHART_HEIGHT - 6.0
            ));
        }
    }
    svg.push_str(&format!(
        "<line x1=\"{CHART_LEFT}\" x2=\"{right}\" y1=\"{baseline:.1}\" y2=\"{baseline:.1}\" \
         stroke=\"#adb5bd\"/>"
    ));
    if tallest == 0 {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no saga ended in this time</text>",
            CHART_LEFT + plot_width / 2.0,
            CHART_TOP + plot_height / 2.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// A gridline step of 1, 2 or 5 times a power of ten giving at most about five lines up to
/// `tallest`.
fn axis_step(tallest: i64) -> i64 {
    let mut magnitude = 1;
    loop {
        for factor in [1, 2, 5] {
            let step = factor * magnitude;
            if tallest <= step * 4 {
                return step;
            }
        }
        magnitude *= 10;
    }
}

fn render_reasons(outcomes: &[Outcome]) -> String {
    let most = outcomes
        .iter()
        .map(|outcome| outcome.count)
        .max()
        .unwrap_or(0);
    let total: i64 = outcomes.iter().map(|outcome| outcome.count).sum();
    // Completion first, then each kind of failure, the most frequent reason first within it.
    let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
    sorted.sort_by_key(|outcome| {
        (
            TERMINAL.iter().position(|status| *status == outcome.status),
            std::cmp::Reverse(outcome.count),
        )
    });
    let rows: String = sorted
        .into_iter()
        .map(|outcome| {
            let status = outcome.status.as_str();
            format!(
                "<tr><td>{badge}</td><td>{reason}</td><td class=\"number\">{count}</td>\
                 <td class=\"number\">{share}%</td>\
                 <td class=\"bar\"><div style=\"width:{width}%;background:var(--{status})\"></div></td></tr>",
                badge = badge(outcome.status),
                reason = match &outcome.reason {
                    Some(reason) => format!("<code>{}</code>", escape(reason)),
                    None => "<span class=\"empty\">none</span>".to_owned(),
                },
                count = outcome.count,
                share = percent(outcome.count, total),
                width = percent(outcome.count, most),
            )
        })
        .collect();
    let body = if outcomes.is_empty() {
        empty_row(5, "no saga ended")
    } else {
        rows
    };
    format!(
        "<section class=\"card\"><h2>Outcomes by reason<small>completion vs compensation</small></h2>\
         <table><tr><th>outcome</th><th>reason</th><th class=\"number\">sagas</th>\
         <th class=\"number\">share</th><th></th></tr>{body}</table></section>"
    )
}

fn render_durations(durations: &[Durations]) -> String {
    let rows: String = TERMINAL
        .iter()
        .map(|status| {
            let cells = match durations.iter().find(|row| row.status == *status) {
                Some(row) => format!(
                    "<td class=\"number\">{}</td><td class=\"number\">{}</td>\
                     <td class=\"number\">{}</td><td class=\"number\">{}</td>",
                    row.count,
                    format_seconds(row.p50),
                    format_seconds(row.p90),
                    format_seconds(row.p99)
                ),
                None => "<td class=\"number\">0</td><td class=\"number\">—</td>\
                         <td class=\"number\">—</td><td class=\"number\">—</td>"
                    .to_owned(),
            };
            format!(
                "<tr id=\"durations-{status}\"><td>{badge}</td>{cells}</tr>",
                status = status.as_str(),
                badge = badge(*status)
            )
        })
        .collect();
    format!(
        "<section class=\"card\"><h2>Saga duration<small>placed → ended</small></h2>\
         <table><tr><th>outcome</th><th class=\"number\">sagas</th><th class=\"number\">p50</th>\
         <th class=\"number\">p90</th><th class=\"number\">p99</th></tr>{rows}</table></section>"
    )
}

fn render_in_flight(in_flight: &[InFlight]) -> String {
    let rows: String = in_flight
        .iter()
        .map(|row| {
            let past_deadline = if row.past_deadline > 0 {
                format!("<span class=\"alert-text\">{}</span>", row.past_deadline)
            } else {
                "0".to_owned()
            };
            let oldest = if row.count > 0 {
                format_seconds(row.oldest_seconds)
            } else {
                "—".to_owned()
            };
            format!(
                "<tr id=\"in-flight-{status}\"><td>{badge}</td><td class=\"number\">{count}</td>\
                 <td class=\"number\">{oldest}</td><td class=\"number\">{past_deadline}</td></tr>",
                status = row.status.as_str(),
                badge = badge(row.status),
                count = row.count,
            )
        })
        .collect();
    format!(
        "<section class=\"card\"><h2>In flight<small>now</small></h2>\
         <table><tr><th>status</th><th class=\"number\">orders</th><th class=\"number\">oldest</th>\
         <th class=\"number\">past deadline</th></tr>{rows}</table></section>"
    )
}

fn render_recent(recent: &[RecentOrder], trace_ui_url: &str) -> String {
    let trace_ui_url = trace_ui_url.trim_end_matches('/');
    let rows: String = recent
        .iter()
        .map(|order| {
            let simple = order.order_id.simple().to_string();
            // A UUIDv7 starts with its timestamp, so orders placed together share their
            // first digits: the random tail tells them apart.
            let short = &simple[simple.len().saturating_sub(8)..];
            let duration = if order.status.is_terminal() {
                format_seconds(order.duration_seconds)
            } else {
                format!(
                    "<span class=\"open-duration\" title=\"still running\">{}…</span>",
                    format_seconds(order.duration_seconds)
                )
            };
            let trace = match order.trace_id.as_deref().filter(|id| is_trace_id(id)) {
                Some(trace_id) => format!(
                    "<a href=\"{href}\" target=\"_blank\" rel=\"noopener\"><code>{short_trace}…</code></a>",
                    href = escape(&format!("{trace_ui_url}/trace/{trace_id}")),
                    short_trace = escape(&trace_id[..8]),
                ),
                None => "—".to_owned(),
            };
            format!(
                "<tr><td><a href=\"/orders/{id}\" title=\"{id}\"><code>…{short}</code></a></td>\
                 <td>{placed} ago</td><td>{badge}</td><td>{reason}</td>\
                 <td class=\"number\">{duration}</td><td>{trace}</td></tr>",
                id = order.order_id,
                placed = format_seconds(order.placed_seconds_ago),
                badge = badge(order.status),
                reason = order
                    .reason
                    .as_deref()
                    .map_or_else(|| "—".to_owned(), |reason| format!("<code>{}</code>", escape(reason))),
            )
        })
        .collect();
    let body = if recent.is_empty() {
        empty_row(6, "no order placed yet")
    } else {
        rows
    };
    format!(
        "<section class=\"card\"><h2>Latest orders<small>newest first; an open order's duration is its age</small></h2>\
         <table><tr><th>order</th><th>placed</th><th>status</th><th>reason</th>\
         <th class=\"number\">duration</th><th>trace</th></tr>{body}</table></section>"
    )
}

/// 32 lowercase hex digits, not all zero: the only trace ids W3C trace context allows.
fn is_trace_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        && text.bytes().any(|byte| byte != b'0')
}

fn badge(status: Status) -> String {
    let status = status.as_str();
    format!("<span class=\"badge {status}\">{status}</span>")
}

fn empty_row(columns: usize, text: &str) -> String {
    format!(
        "<tr><td colspan=\"{columns}\" class=\"empty\">{}</td></tr>",
        escape(text)
    )
}

/// A duration for people: `340 ms`, `2.41 s`, `12.3 s`, `4 min 05 s`, `2 h 07 min`.
fn format_seconds(seconds: f64) -> String {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        let whole = seconds as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let whole = seconds as u64;
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

/// `text` safe to put in HTML text and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn read_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time")
    }

    fn empty_overview() -> Overview {
        Overview {
            read_at: read_at(),
            placed: 0,
            outcomes: Vec::new(),
            durations: Vec::new(),
            in_flight: OPEN
                .iter()
                .map(|status| InFlight {
                    status: *status,
                    count: 0,
                    past_deadline: 0,
                    oldest_seconds: 0.0,
                })
                .collect(),
            throughput: (0..BUCKETS)
                .map(|index| Bucket {
                    start: read_at()
                        - chrono::Duration::seconds(10 * i64::from(BUCKETS - 1 - index)),
                    completed: 0,
                    rejected: 0,
                    cancelled: 0,
                })
                .collect(),
            recent: Vec::new(),
        }
    }

    fn busy_overview() -> Overview {
        let mut overview = empty_overview();
        overview.placed = 12;
        overview.outcomes = vec![
            Outcome {
                status: Status::Completed,
                reason: None,
                count: 6,
            },
            Outcome {
                status: Status::Cancelled,
                reason: Some("payment_declined".to_owned()),
                count: 2,
            },
            Outcome {
                status: Status::Rejected,
                reason: Some("out_of_stock".to_owned()),
                count: 1,
            },
            Outcome {
                status: Status::Cancelled,
                reason: Some("deadline_exceeded".to_owned()),
                count: 1,
            },
        ];
        overview.durations = vec![Durations {
            status: Status::Completed,
            count: 6,
            p50: 0.25,
            p90: 1.5,
            p99: 75.0,
        }];
        overview.in_flight[2] = InFlight {
            status: Status::Paid,
            count: 2,
            past_deadline: 1,
            oldest_seconds: 42.0,
        };
        overview.throughput[BUCKETS as usize - 1].completed = 5;
        overview.throughput[BUCKETS as usize - 1].cancelled = 3;
        overview.throughput[BUCKETS as usize - 2].rejected = 1;
        overview.recent = vec![
            RecentOrder {
                order_id: Uuid::now_v7(),
                status: Status::Paid,
                reason: None,
                placed_seconds_ago: 3.0,
                duration_seconds: 3.0,
                trace_id: None,
            },
            RecentOrder {
                order_id: Uuid::now_v7(),
                status: Status::Completed,
                reason: None,
                placed_seconds_ago: 9.0,
                duration_seconds: 0.4,
                trace_id: Some(TRACE_ID.to_owned()),
            },
        ];
        overview
    }

    #[test]
    fn the_page_reloads_itself_and_loads_nothing_from_elsewhere() {
        let page = render(&busy_overview(), "http://localhost:16686");
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        for external in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(external), "the page contains {external}");
        }
    }

    #[test]
    fn tiles_add_up_outcomes_and_count_open_orders_past_their_deadline_as_stuck() {
        let page = render(&busy_overview(), "http://localhost:16686");
        for (tile, value) in [
            ("placed", 12),
            ("completed", 6),
            ("rejected", 1),
            ("cancelled", 3),
            ("in-flight", 2),
            ("stuck", 1),
        ] {
            assert!(
                page.contains(&format!("<b id=\"tile-{tile}\">{value}</b>")),
                "tile {tile} should show {value}"
            );
        }
        assert!(page.contains("60% of sagas ended"));
        assert!(page.contains("tile stuck alert"));
    }

    #[test]
    fn throughput_draws_a_stacked_bar_per_bucket_and_sums_them() {
        let page = render(&busy_overview(), "http://localhost:16686");
        assert_eq!(page.matches("<g><title>").count(), BUCKETS as usize);
        assert!(page.contains("12:00:00–12:00:10 UTC: 5 completed, 0 rejected, 3 cancelled"));
        assert!(page.contains(
            "9 sagas ended in the last 10 minutes: 5 completed · 1 rejected · 3 cancelled"
        ));
        // Three segments: two in the newest bar, one in the bar before it.
        assert_eq!(page.matches("<rect").count(), 3);
    }

    #[test]
    fn reasons_list_completion_then_each_failure_most_frequent_first_with_their_share() {
        let page = render(&busy_overview(), "http://localhost:16686");
        let table = &page[page.find("Outcomes by reason").expect("the reasons card")..];
        let position = |text: &str| table.find(text).unwrap_or_else(|| panic!("no {text}"));
        assert!(position("badge completed") < position("<code>out_of_stock</code>"));
        assert!(position("<code>out_of_stock</code>") < position("<code>payment_declined</code>"));
        assert!(
            position("<code>payment_declined</code>") < position("<code>deadline_exceeded</code>")
        );
        assert!(table.contains(
            "<code>payment_declined</code></td><td class=\"number\">2</td><td class=\"number\">20%</td>"
        ));
    }

    #[test]
    fn durations_list_every_outcome_with_dashes_for_those_without_sagas() {
        let page = render(&busy_overview(), "http://localhost:16686");
        assert!(page.contains(
            "<tr id=\"durations-completed\"><td><span class=\"badge completed\">completed</span></td>\
             <td class=\"number\">6</td><td class=\"number\">250 ms</td>\
             <td class=\"number\">1.50 s</td><td class=\"number\">1 min 15 s</td></tr>"
        ));
        assert!(page.contains("<tr id=\"durations-rejected\"><td><span class=\"badge rejected\">rejected</span></td><td class=\"number\">0</td><td class=\"number\">—</td>"));
    }

    #[test]
    fn an_order_with_a_trace_links_to_it_and_one_without_shows_a_dash() {
        let page = render(&busy_overview(), "http://jaeger.example:16686/");
        assert!(page.contains(&format!(
            "<a href=\"http://jaeger.example:16686/trace/{TRACE_ID}\" target=\"_blank\" rel=\"noopener\"><code>4bf92f35…</code></a>"
        )));
        assert_eq!(page.matches("/trace/").count(), 1);
    }

    #[test]
    fn a_malformed_trace_id_is_not_linked() {
        let mut overview = busy_overview();
        overview.recent[1].trace_id = Some("\"><script>alert(1)</script>".to_owned());
        overview.recent[0].trace_id = Some("0".repeat(32));
        let page = render(&overview, "http://localhost:16686");
        assert!(!page.contains("/trace/"));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn strings_from_the_database_and_the_configuration_are_escaped() {
        let mut overview = busy_overview();
        overview.outcomes[1].reason = Some("<b>&\"'".to_owned());
        overview.recent[1].reason = Some("<img onerror=x>".to_owned());
        let page = render(&overview, "http://x/\"onmouseover=\"alert(1)");
        assert!(page.contains("<code>&lt;b&gt;&amp;&quot;&#39;</code>"));
        assert!(page.contains("<code>&lt;img onerror=x&gt;</code>"));
        assert!(page.contains("href=\"http://x/&quot;onmouseover=&quot;alert(1)/trace/"));
    }

    #[test]
    fn an_empty_database_renders_zeros_and_says_so() {
        let page = render(&empty_overview(), "http://localhost:16686");
        assert!(page.contains("<b id=\"tile-completed\">0</b>"));
        assert!(page.contains("no saga ended in this time"));
        assert!(page.contains("no order placed yet"));
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn an_open_order_shows_its_age_as_still_running() {
        let page = render(&busy_overview(), "http://localhost:16686");
        assert!(
            page.contains("<span class=\"open-duration\" title=\"still running\">3.00 s…</span>")
        );
    }

    #[test]
    fn gridlines_step_by_one_two_or_five_times_a_power_of_ten() {
        let steps: Vec<i64> = [0, 1, 4, 5, 8, 9, 20, 21, 40, 41, 400]
            .into_iter()
            .map(axis_step)
            .collect();
        assert_eq!(steps, [1, 1, 1, 2, 2, 5, 5, 10, 10, 20, 100]);
    }

    #[test]
    fn durations_read_naturally_at_every_scale() {
        let formatted: Vec<String> = [
            0.0,
            0.0004,
            0.34,
            2.413,
            12.34,
            245.0,
            7620.0,
            -1.0,
            f64::NAN,
        ]
        .into_iter()
        .map(format_seconds)
        .collect();
        assert_eq!(
            formatted,
            [
                "0 ms",
                "0 ms",
                "340 ms",
                "2.41 s",
                "12.3 s",
                "4 min 05 s",
                "2 h 07 min",
                "0 ms",
                "0 ms"
            ]
        );
    }

    #[test]
    fn escape_covers_the_five_html_specials() {
        assert_eq!(
            escape("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
    }
}
