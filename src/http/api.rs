//! The JSON API (`/api/v1/...`) and the event stream: each endpoint calls the query
//! function its socket command uses and serialises what it returns, so the bodies are
//! exactly what `list --json`, `where --json`, `history --json`, `peers --json`,
//! `status --json` and `events --json` print.
//!
//! A query that matches nothing is 404 with the body `[]` (what the CLI prints with exit
//! 1), so a script can tell "no such disk" from "no disks" without parsing an error; a
//! store that cannot be read is 500 with `{"error": ...}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{error, AppState};
use crate::control::cmd::QueryError;
use crate::control::cmd::{events, history, list, peers as peer_list, status as report, where_is};
use crate::protocol::commands::List;

/// An event stream sends a comment this often when nothing happens, so proxies and
/// browsers keep it open and a vanished client is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query string of `/api/v1/disks`; anything else in it is a 400, not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisksParams {
    /// A TERM as `where` takes it: UUID, label, device, serial or WWN.
    q: Option<String>,
}

/// `/api/v1/disks` = `list --json`; with `?q=TERM`, `where TERM --json`.
pub(super) async fn disks(
    State(st): State<AppState>,
    params: Result<Query<DisksParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    rows(match params.q {
        Some(term) => where_is::disks(&term, &st.ctx),
        None => list::disks(&List::default(), &st.ctx),
    })
}

/// `/api/v1/disks/TERM/history` = `history TERM --json` (TERM percent-decoded, so a
/// device path travels as `%2Fdev%2Fsdb1`).
pub(super) async fn history(
    State(st): State<AppState>,
    term: Result<Path<String>, PathRejection>,
) -> Response {
    match term {
        Ok(Path(term)) => rows(history::stays(&term, &st.ctx)),
        Err(e) => error(StatusCode::BAD_REQUEST, e.body_text()),
    }
}

/// `/api/v1/peers` = `peers --json`.
pub(super) async fn peers(State(st): State<AppState>) -> Response {
    Json(peer_list::peers(&st.ctx)).into_response()
}

/// `/api/v1/status` = `status --json` (measured off the runtime, as the socket does).
pub(super) async fn status(State(st): State<AppState>) -> Response {
    match st.off_runtime(report::report).await {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

/// Rows as a JSON array; no match as 404 with `[]`; a store failure as 500.
fn rows<T: Serialize>(found: Result<Vec<T>, QueryError>) -> Response {
    match found {
        Ok(rows) => Json(rows).into_response(),
        Err(QueryError::NoMatch(_)) => {
            (StatusCode::NOT_FOUND, Json(Vec::<T>::new())).into_response()
        }
        Err(e @ QueryError::Store(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `/api/v1/events`: server-sent events from the fleet bus the socket's `events` reads,
/// one `data:` line per event holding exactly the `events --json` object (a reader that
/// falls behind gets the same `dropped` object). A comment every [`KEEP_ALIVE`]; the
/// stream ends when the daemon stops. At most `MAX_EVENT_STREAMS` at once (503 past it).
pub(super) async fn events(State(st): State<AppState>) -> Response {
    let Ok(slot) = st.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams (limit {}); try again later",
                super::MAX_EVENT_STREAMS
            ),
        );
    };
    // Subscribed before the response starts: once a client has the headers, it misses
    // nothing that happens after.
    let fleet = st.ctx.fleet().subscribe();
    let shutdown = st.ctx.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (fleet, shutdown, slot),
        |(mut fleet, shutdown, slot)| async move {
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = fleet.recv() => r,
            };
            let line = events::line(received, true)?;
            let event = Event::default().data(line);
            Some((Ok::<_, Infallible>(event), (fleet, shutdown, slot)))
        },
    );
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // A proxy such as nginx must pass each event on at once, not buffer the stream.
    resp.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HealthState;
    use crate::view::{DiskView, HealthView};

    fn view(device: &str) -> DiskView {
        DiskView::sample("h", device)
    }

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// `/api/v1/disks` rows carry the SMART reading and the filesystem figures, as
    /// `list --json` does: present when known, null (never missing) when not.
    #[tokio::test]
    async fn disk_rows_carry_health_and_capacity_null_when_unknown() {
        let mut known = view("/dev/sda1");
        known.mountpoints = vec!["/srv".into()];
        (known.fs_size, known.fs_used, known.fs_avail) = (Some(1000), Some(600), Some(350));
        known.health = Some(HealthView {
            state: HealthState::Failing,
            reasons: vec!["SMART overall-health self-assessment: FAILED".into()],
            temperature_c: Some(44),
            power_on_hours: Some(30_000),
            reallocated_sectors: Some(120),
            pending_sectors: Some(3),
            media_errors: None,
            percentage_used: None,
            checked: Some("2026-12-06T09:59:00Z".into()),
        });
        let resp = rows::<DiskView>(Ok(vec![known, view("/dev/sdb")]));
        assert_eq!(resp.status(), StatusCode::OK);
        let v = body(resp).await;
        let h = &v[0]["health"];
        assert_eq!(h["state"], "failing");
        assert_eq!(
            h["reasons"][0],
            "SMART overall-health self-assessment: FAILED"
        );
        assert_eq!(h["temperature_c"], 44);
        assert_eq!(h["power_on_hours"], 30_000);
        assert_eq!(h["reallocated_sectors"], 120);
        assert_eq!(h["pending_sectors"], 3);
        assert!(h["media_errors"].is_null() && h.get("media_errors").is_some());
        assert_eq!(h["checked"], "2026-12-06T09:59:00Z");
        assert_eq!(
            (&v[0]["fs_size"], &v[0]["fs_used"], &v[0]["fs_avail"]),
            (&1000.into(), &600.into(), &350.into())
        );
        let unknown = v[1].as_object().unwrap();
        for k in ["health", "fs_size", "fs_used", "fs_avail"] {
            assert_eq!(unknown.get(k), Some(&serde_json::Value::Null), "{k}: {v}");
        }
    }
}
