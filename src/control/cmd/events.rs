//! `events [--json]`: stream changes of the fleet picture to this session, one body line
//! each, until it sends a line or disconnects.
//!
//! Framed as `debug` is (`+OK`, a body line per event, `.` at the end), so the one reply
//! simply never ends while the fleet changes. The lines come from the fleet bus, which says
//! each change once (not per announce), so the stream is what happened, not what was heard.
//! In JSON mode every line is one object (NDJSON), the lost-events notice included, so a
//! `jq` pipeline never meets a line it cannot parse.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::control::connection::Connection;
use crate::control::Context;
use crate::model::{now_millis, rfc3339, FleetEvent};
use crate::protocol::commands::Json;
use crate::protocol::frame::{encode_body_line, Status};

/// Stream events as body lines; a line from the client (or shutdown) ends the reply. The
/// end of the client's stream ends the session without one.
pub async fn run(cmd: &Json, ctx: &Context, conn: &mut Connection) -> std::io::Result<()> {
    let mut fleet = ctx.fleet().subscribe();
    let head = Status::Ok("streaming fleet events; send any line to stop".into()).line();
    conn.write_raw(format!("{head}\n").as_bytes()).await?;
    loop {
        let line = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            line = conn.read_line() => match line? {
                Some(_) => break,
                // Gone (Ctrl-C on `diskd events`): nobody to end the reply for.
                None => return Ok(()),
            },
            ev = fleet.recv() => match line(ev, cmd.json) {
                Some(line) => line,
                None => break,
            },
        };
        conn.write_raw(format!("{}\n", encode_body_line(&line)).as_bytes())
            .await?;
    }
    conn.write_raw(b".\n").await
}

/// What a reader of the fleet bus shows for what it received: the event (one JSON object
/// in JSON mode, else a readable line), the notice of how many it lost when it fell
/// behind, or `None` when the bus is closed (the daemon is stopping). The socket's
/// `events` and HTTP's `/api/v1/events` (one `data:` line each) both show this.
pub fn line(received: Result<Arc<FleetEvent>, RecvError>, json: bool) -> Option<String> {
    Some(match received {
        Ok(e) if json => e.to_json().to_string(),
        Ok(e) => text(&e),
        Err(RecvError::Lagged(n)) => dropped(n, json),
        Err(RecvError::Closed) => return None,
    })
}

/// One event as a readable line: time, kind, host, then the disk's identity and state or
/// the peer's address. Every value that came from a peer is shown escaped (see [`shown`]).
pub fn text(e: &FleetEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        rfc3339(e.time),
        e.kind.name(),
        shown(Some(&e.host))
    );
    match &e.disk {
        Some(d) => {
            s.push_str(&format!(
                " {} uuid={} label={} fstype={}",
                shown(Some(&d.device)),
                shown(d.uuid.as_deref()),
                shown(d.label.as_deref()),
                shown(d.fstype.as_deref()),
            ));
            if !d.mountpoints.is_empty() {
                let mps: Vec<String> = d.mountpoints.iter().map(|m| shown(Some(m))).collect();
                s.push_str(&format!(" mountpoints={}", mps.join(",")));
            }
        }
        None => {
            s.push_str(&format!(
                " addr={} node_id={}",
                shown(e.addr.as_deref()),
                shown(Some(&e.node_id))
            ));
        }
    }
    if e.local {
        s.push_str(" (local)");
    } else if !e.sealed {
        // Anyone on the LAN could have said it.
        s.push_str(" (unsealed)");
    }
    s
}

/// The notice for a reader that fell behind: how many events it will never see. In JSON
/// mode an object of its own kind (`"event": "dropped"`), so the stream stays NDJSON.
pub fn dropped(n: u64, json: bool) -> String {
    if json {
        serde_json::json!({"event": "dropped", "time": rfc3339(now_millis()), "count": n})
            .to_string()
    } else {
        format!("({n} events dropped: this session reads too slowly)")
    }
}

/// A value as a word on the line: `-` for none, plain text as is, anything else (spaces,
/// quotes, control characters: a label is whatever a peer says it is) quoted with Rust's
/// escapes, so a hostile label can neither split the line nor drive the terminal.
fn shown(v: Option<&str>) -> String {
    match v {
        None => "-".into(),
        Some(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || "-_./:@+=%".contains(c)) =>
        {
            s.to_string()
        }
        Some(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fleet::Host;
    use crate::model::{DiskRecord, FleetEventKind};

    const HOST: Host<'static> = Host {
        node_id: "00000000000000000000000000000001",
        name: "node-a",
        addr: Some("198.18.0.1"),
        local: false,
        sealed: true,
    };

    #[test]
    fn a_disk_event_reads_as_one_escaped_line() {
        let d = DiskRecord {
            probe: Default::default(),
            uuid: Some("6fe176fb-0000-4000-8000-000000000001".into()),
            label: Some("my photos\n\u{1b}[31m".into()),
            device: "/dev/sdb1".into(),
            fstype: None,
            mountpoints: vec!["/srv/a b".into(), "/mnt".into()],
            hardware: Default::default(),
            health: None,
            fs: None,
        };
        let e = FleetEvent::disk(FleetEventKind::Mounted, 0, &HOST, &d);
        assert_eq!(
            text(&e),
            "1970-01-01T00:00:00Z mounted   node-a /dev/sdb1 \
             uuid=6fe176fb-0000-4000-8000-000000000001 \
             label=\"my photos\\n\\u{1b}[31m\" fstype=- mountpoints=\"/srv/a b\",/mnt"
        );
    }

    #[test]
    fn a_peer_event_names_the_peer() {
        let local = Host {
            local: true,
            sealed: true,
            ..HOST
        };
        let e = FleetEvent::peer(FleetEventKind::PeerLost, 1000, &local);
        assert_eq!(
            text(&e),
            "1970-01-01T00:00:01Z peer-lost node-a addr=198.18.0.1 \
             node_id=00000000000000000000000000000001 (local)"
        );
    }

    #[test]
    fn an_unsealed_peer_event_says_so_in_text_and_json() {
        let unsealed = Host {
            sealed: false,
            ..HOST
        };
        let e = FleetEvent::peer(FleetEventKind::PeerLive, 1000, &unsealed);
        assert!(text(&e).ends_with(" (unsealed)"), "{}", text(&e));
        assert_eq!(e.to_json()["sealed"], false);
        let e = FleetEvent::peer(FleetEventKind::PeerLive, 1000, &HOST);
        assert!(!text(&e).contains("unsealed"), "{}", text(&e));
        assert_eq!(e.to_json()["sealed"], true);
        // This machine's own events are sealed whatever the host says.
        let local = Host {
            local: true,
            sealed: false,
            ..HOST
        };
        let e = FleetEvent::peer(FleetEventKind::PeerLive, 1000, &local);
        assert_eq!(e.to_json()["sealed"], true);
    }

    #[test]
    fn the_dropped_notice_is_json_in_json_mode() {
        let v: serde_json::Value = serde_json::from_str(&dropped(7, true)).unwrap();
        assert_eq!(v["event"], "dropped");
        assert_eq!(v["count"], 7);
        assert!(dropped(7, false).contains("7 events dropped"));
    }
}
