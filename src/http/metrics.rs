//! `/metrics`: the daemon's counters for Prometheus, gathered at scrape time.
//!
//! Nothing is counted twice: every value is read, when a scrape comes, from what `status`,
//! `list` and `peers` report (the same functions the socket commands call), plus the HTTP
//! server's own connection counters. A fresh `prometheus-client` registry is built per
//! scrape and encoded by the crate (never formatted by hand): the Prometheus text format
//! 0.0.4 by default, OpenMetrics when the scraper asks for it in `Accept`. Names follow
//! Prometheus conventions: a `diskd_` prefix, base units in the name (`_bytes`,
//! `_seconds`), `_total` on counters (added by the crate). The per-disk series (SMART
//! health, filesystem capacity) are gathered in `disk_series`.

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::{error, AppState, HttpStats};
use crate::control::cmd::{list, peers, status};
use crate::control::Context;
use crate::protocol::commands::List;
use crate::telemetry::Stats;

mod disk_series;

type Labels = Vec<(String, String)>;

/// The `via` values of `peers --json`, each given a series (0 when none) so dashboards
/// see every combination from the first scrape.
const VIAS: [&str; 4] = ["multicast", "gossip", "both", "legacy"];

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let http = st.stats.clone();
    let streams_free = st.streams.available_permits();
    // `status` measures the store on disk: off the runtime, as the socket runs it.
    let text = match st
        .off_runtime(move |ctx| encode(&gather(ctx, &http, streams_free), openmetrics))
        .await
    {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metrics: {e}"),
            )
        }
        Err(resp) => return resp,
    };
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_text::CONTENT_TYPE
    };
    (
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response()
}

fn encode(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    if openmetrics {
        openmetrics_text::encode(&mut text, registry)?;
    } else {
        prometheus_text::encode(&mut text, registry)?;
    }
    Ok(text)
}

/// Labels from pairs.
fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A registry being filled, with one-line helpers per metric kind.
struct Metrics(Registry);

impl Metrics {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let g: Gauge = Gauge::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn gauge_in(&mut self, name: &str, help: &str, unit: Unit, value: i64) {
        let g: Gauge = Gauge::default();
        g.set(value);
        self.0.register_with_unit(name, help, unit, g);
    }

    fn counters(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let f = Family::<Labels, Counter>::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauges(&mut self, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
        self.0.register(name, help, gauge_family(rows));
    }

    fn gauges_in(&mut self, name: &str, help: &str, unit: Unit, rows: Vec<(Labels, i64)>) {
        self.0
            .register_with_unit(name, help, unit, gauge_family(rows));
    }
}

fn gauge_family(rows: Vec<(Labels, i64)>) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    f
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Read everything now. Blocking (the store's size on disk): run off the runtime.
fn gather(ctx: &Context, http: &HttpStats, streams_free: usize) -> Registry {
    let report = status::report(ctx);
    let c = &report.counters;
    let mut m = Metrics(Registry::default());

    m.0.register(
        "diskd_build",
        "diskd's version and the git commit it was built from, as labels of a constant 1",
        Info::new(labels([
            ("version", report.version),
            ("commit", report.commit.unwrap_or("")),
        ])),
    );

    // The fleet picture, counted from exactly what `list` and `peers` show.
    // A store that cannot be read shows as no series rather than as zero disks.
    if let Ok(disks) = list::disks(&List::default(), ctx) {
        let live = disks.iter().filter(|d| d.live).count();
        let last_known = disks.len() - live;
        m.gauges(
            "diskd_disks",
            "Disk records known: live (in the latest inventory of a live host) or last_known",
            vec![
                (labels([("state", "live")]), int(live)),
                (labels([("state", "last_known")]), int(last_known)),
            ],
        );
        disk_series::register(&mut m, &disks);
    }
    let peers = peers::peers(ctx);
    let mut rows = Vec::new();
    for state in ["live", "not_live"] {
        for via in VIAS {
            let n = peers
                .iter()
                .filter(|p| p.live == (state == "live") && p.via == via)
                .count();
            rows.push((labels([("state", state), ("via", via)]), int(n)));
        }
    }
    m.gauges(
        "diskd_peers",
        "Peers ever heard, by liveness and by how they are heard",
        rows,
    );

    // The peer layer.
    m.counter(
        "diskd_packets_received",
        "Datagrams received by the peer layer",
        c.packets_received,
    );
    m.counter(
        "diskd_packets_sent",
        "Datagrams sent by the peer layer",
        c.packets_sent,
    );
    m.counters(
        "diskd_packets_rejected",
        "Datagrams dropped, by reason",
        c.rejected_by_reason
            .iter()
            .map(|(reason, n)| (labels([("reason", reason)]), *n))
            .collect(),
    );
    let sent: Counter = Counter::default();
    sent.inc_by(c.bytes_sent);
    m.0.register_with_unit("diskd_sent", "Bytes of datagrams sent", Unit::Bytes, sent);
    m.counter(
        "diskd_send_errors",
        "Datagrams not sent because of a transient error",
        c.send_errors,
    );
    m.counter(
        "diskd_announces",
        "Inventory announces sent (each one or more datagrams)",
        c.announces,
    );
    m.counters(
        "diskd_pings",
        "Pings received: answered with an announce, or suppressed by the rate limit",
        vec![
            (labels([("result", "answered")]), c.pings_answered),
            (labels([("result", "suppressed")]), c.pings_suppressed),
        ],
    );

    // Watchers.
    let mut scans = Vec::new();
    let mut last_ok = Vec::new();
    for (name, h) in &report.watchers {
        scans.push((labels([("watcher", name), ("result", "ok")]), h.scans_ok));
        for (reason, n) in &h.failures {
            scans.push((labels([("watcher", name), ("result", reason)]), *n));
        }
        if let Some(at) = h.last_ok_at {
            last_ok.push((labels([("watcher", name)]), at as f64 / 1000.0));
        }
    }
    m.counters(
        "diskd_watcher_scans",
        "Watcher scans by result: ok, or why one failed (timed_out, not_found, ...)",
        scans,
    );
    let f = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (l, v) in last_ok {
        f.get_or_create(&l).set(v);
    }
    m.0.register_with_unit(
        "diskd_watcher_last_success_timestamp",
        "When each watcher's latest successful scan finished (Unix time)",
        Unit::Seconds,
        f,
    );
    m.counter(
        "diskd_inventory_writes",
        "Local inventories written to the store",
        c.inventory_writes,
    );

    // Hooks. A finished run is ok unless it failed or timed out; runs still going are
    // counted when they end.
    let mut runs = Vec::new();
    let mut running = Vec::new();
    for h in &report.hooks {
        let i = h.index.to_string();
        let ok = h.runs.saturating_sub(h.failures + h.timeouts + h.running);
        for (result, n) in [
            ("ok", ok),
            ("failed", h.failures),
            ("timed_out", h.timeouts),
            ("dropped", h.dropped),
        ] {
            runs.push((labels([("hook", &i), ("result", result)]), n));
        }
        running.push((labels([("hook", &i)]), int(h.running)));
    }
    m.counters(
        "diskd_hook_runs",
        "Hook runs by result: ok, failed, timed_out, or dropped (the queue was full)",
        runs,
    );
    m.gauges("diskd_hook_running", "Hook commands running now", running);
    m.gauge(
        "diskd_hook_queued",
        "Hook runs waiting for a free slot",
        int(report.hooks_queued),
    );

    // The store.
    m.gauge_in(
        "diskd_store_size",
        "The store's size on disk",
        Unit::Bytes,
        int(report.store_bytes),
    );
    m.gauge(
        "diskd_store_records",
        "Key/value records in the store",
        int(report.store_records),
    );
    m.gauge(
        "diskd_store_failing",
        "1 while the store's writes fail (answering from memory, retrying), else 0",
        i64::from(!report.store_health.is_ok()),
    );
    m.counter(
        "diskd_store_write_errors",
        "Store writes that failed",
        c.store_errors,
    );

    // The control socket.
    m.gauge(
        "diskd_control_sessions_open",
        "Control socket sessions open now",
        int(c.sessions_open),
    );
    m.counter(
        "diskd_control_sessions_accepted",
        "Control socket sessions accepted",
        c.sessions_total,
    );
    m.counters(
        "diskd_control_sessions_refused",
        "Control socket sessions turned away, by reason (user_share: the uid held \
         control.max_sessions_per_user; table_full: no session left it may use)",
        ["user_share", "table_full"]
            .into_iter()
            .map(|reason| {
                let n = c
                    .sessions_refused_by_reason
                    .get(reason)
                    .copied()
                    .unwrap_or(0);
                (labels([("reason", reason)]), n)
            })
            .collect(),
    );
    m.counter("diskd_control_commands", "Control commands run", c.commands);
    m.counter(
        "diskd_control_command_errors",
        "Control commands that got an error reply",
        c.command_errors,
    );

    // This listener.
    m.gauge(
        "diskd_http_connections_open",
        "HTTP connections open now",
        int(Stats::get(&http.connections_open)),
    );
    m.counter(
        "diskd_http_connections_accepted",
        "HTTP connections accepted",
        Stats::get(&http.connections_total),
    );
    m.counter(
        "diskd_http_connections_refused",
        "HTTP connections turned away at the connection limit",
        Stats::get(&http.connections_refused),
    );
    m.gauge(
        "diskd_http_event_streams",
        "Event streams (/api/v1/events) open now",
        int(super::MAX_EVENT_STREAMS - streams_free),
    );
    m.counter(
        "diskd_http_requests",
        "HTTP requests received",
        Stats::get(&http.requests),
    );
    m.counter(
        "diskd_http_requests_unauthorized",
        "HTTP requests refused for a missing or wrong bearer token",
        Stats::get(&http.unauthorized),
    );
    m.0
}
