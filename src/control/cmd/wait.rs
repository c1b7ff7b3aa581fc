//! `wait TERM [--timeout DURATION] [--mounted] [--host NAME] [--json]`: block until the disk
//! is live (on that host, mounted there), then answer as `where` does.
//!
//! Event-driven, never polling: the session subscribes to the fleet bus *before* it first
//! looks at the store, so a change that lands between that look and the subscription is
//! still seen; after that it looks again only when an event could have made the answer yes
//! (or when it fell behind the bus and cannot know what it missed). The store, not the
//! event, decides: the reply is what `where` prints at that moment, kept to the records that
//! satisfy the wait, so `wait` and `where` can never disagree about a disk.
//!
//! The session stays readable meanwhile: a line from the client cancels the wait, the end of
//! its stream ends it (a `diskd wait` killed by Ctrl-C), and so does the daemon's shutdown,
//! with an error, so a client can tell "not there in time" (`-NOMATCH`, exit 1) from "the
//! daemon went away" (`-ERR`, exit 3).

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::list::{no_match, render};
use super::QueryError;
use crate::control::connection::Connection;
use crate::control::Context;
use crate::model::{FleetEvent, FleetEventKind};
use crate::protocol::commands::Wait;
use crate::protocol::frame::{Reply, Status};

/// Wait, then build the reply; `None` when the client went away first (nothing to send).
pub async fn run(
    cmd: &Wait,
    ctx: &Context,
    conn: &mut Connection,
) -> std::io::Result<Option<Reply>> {
    // First subscribe, then look: the other order could miss a change made in between.
    let mut fleet = ctx.fleet().subscribe();
    let mut nudges = ctx.fleet().nudges();
    // A deadline too far to represent (`--timeout 1000years`) is no deadline.
    let deadline = cmd.timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        if let Some(reply) = check(cmd, ctx) {
            return Ok(Some(reply));
        }
        // Checked here too, not only in the `select!`: a steady stream of events must not
        // hold off the timeout.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Some(timed_out(cmd)));
        }
        // Wait for something that may change the answer.
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => {
                    return Ok(Some(Reply::status(Status::Error("daemon shutting down".into()))));
                }
                line = conn.read_line() => {
                    // Any line cancels; the end of the stream means the client is gone
                    // (Ctrl-C on `diskd wait`) and there is nobody to answer.
                    return Ok(line?.map(|_| {
                        no_match(format!("wait cancelled: {}", what(cmd)), cmd.json)
                    }));
                }
                ev = fleet.recv() => match ev {
                    Ok(e) if may_satisfy(&e, cmd) => break,
                    Ok(_) => {}
                    // Events were lost: any of them may have been the one.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        return Ok(Some(Reply::status(Status::Error(
                            "the daemon's event bus closed (shutting down)".into(),
                        ))));
                    }
                },
                // A change told as no event (a peer back within its goodbye grace).
                r = nudges.changed() => {
                    if r.is_err() {
                        return Ok(Some(Reply::status(Status::Error(
                            "the daemon's event bus closed (shutting down)".into(),
                        ))));
                    }
                    break;
                }
                _ = until(deadline) => break,
            }
        }
    }
}

/// The reply when the wait is over, `None` while it is not: the live records of the disk
/// that satisfy the wait, rendered as `where` renders them. A store that cannot be read
/// ends the wait with an error rather than hiding it.
fn check(cmd: &Wait, ctx: &Context) -> Option<Reply> {
    let found = match super::where_is::disks(&cmd.term, ctx) {
        Ok(found) => found,
        Err(QueryError::NoMatch(_)) => Vec::new(),
        Err(e) => return Some(e.reply(cmd.json)),
    };
    let hits: Vec<_> = found
        .into_iter()
        .filter(|d| {
            d.live
                && cmd.host.as_deref().is_none_or(|h| d.host == h)
                && (!cmd.mounted || !d.mountpoints.is_empty())
        })
        .collect();
    (!hits.is_empty()).then(|| render(hits, cmd.json, Status::Ok(String::new())))
}

/// Whether an event may have made the wait's answer yes, so the store is worth another
/// look: the disk showed up, changed (a new label or device may now be the term) or got
/// mounted, or a peer came back (its stored disks are live again). Vanishing and unmounting
/// can only make it no.
fn may_satisfy(e: &FleetEvent, cmd: &Wait) -> bool {
    if cmd.host.as_deref().is_some_and(|h| h != e.host) {
        return false;
    }
    match e.kind {
        FleetEventKind::PeerLive => true,
        FleetEventKind::Appeared | FleetEventKind::Changed | FleetEventKind::Mounted => {
            e.disk.as_ref().is_some_and(|d| d.matches(&cmd.term))
        }
        FleetEventKind::Vanished
        | FleetEventKind::Unmounted
        | FleetEventKind::PeerLost
        | FleetEventKind::HealthChanged => false,
    }
}

/// The timeout's reply: no match, with `[]` in JSON mode as `where` gives.
fn timed_out(cmd: &Wait) -> Reply {
    let after = cmd
        .timeout
        .map(|t| format!(" after {}", humantime::format_duration(t)))
        .unwrap_or_default();
    no_match(format!("timed out{after}: {}", what(cmd)), cmd.json)
}

/// What was waited for, in words: `no live disk matches "x" on host "a" (mounted)`.
fn what(cmd: &Wait) -> String {
    let mut s = format!(
        "no live{} disk matches {:?}",
        if cmd.mounted { ", mounted" } else { "" },
        cmd.term
    );
    if let Some(h) = &cmd.host {
        s.push_str(&format!(" on host {h:?}"));
    }
    s
}

/// Sleep until the deadline; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fleet::Host;
    use crate::model::DiskRecord;

    fn wait(term: &str, host: Option<&str>) -> Wait {
        Wait {
            term: term.into(),
            timeout: Some(std::time::Duration::from_secs(90)),
            mounted: true,
            host: host.map(Into::into),
            json: false,
        }
    }

    fn event(kind: FleetEventKind, host: &str, label: &str) -> FleetEvent {
        let h = Host {
            node_id: "00000000000000000000000000000001",
            name: host,
            addr: None,
            local: false,
            sealed: true,
        };
        let d = DiskRecord {
            probe: Default::default(),
            uuid: Some("6FE176FB-0000-4000-8000-000000000001".into()),
            label: Some(label.into()),
            device: "/dev/sdb1".into(),
            fstype: None,
            mountpoints: vec![],
            hardware: Default::default(),
            health: None,
            fs: None,
        };
        if kind.is_peer() {
            FleetEvent::peer(kind, 0, &h)
        } else {
            FleetEvent::disk(kind, 0, &h, &d)
        }
    }

    #[test]
    fn only_events_that_can_make_the_answer_yes_cause_a_look() {
        use FleetEventKind::*;
        let w = wait("backup", None);
        for k in [Appeared, Changed, Mounted, PeerLive] {
            assert!(may_satisfy(&event(k, "a", "backup"), &w), "{k:?}");
        }
        for k in [Vanished, Unmounted, PeerLost] {
            assert!(!may_satisfy(&event(k, "a", "backup"), &w), "{k:?}");
        }
        assert!(!may_satisfy(&event(Appeared, "a", "other"), &w));
        // The UUID in any case, as `where` matches it.
        let by_uuid = wait("6fe176fb-0000-4000-8000-000000000001", None);
        assert!(may_satisfy(&event(Appeared, "a", "x"), &by_uuid));
        // With --host, only that host's events.
        let on_b = wait("backup", Some("b"));
        assert!(!may_satisfy(&event(Appeared, "a", "backup"), &on_b));
        assert!(!may_satisfy(&event(PeerLive, "a", ""), &on_b));
        assert!(may_satisfy(&event(Appeared, "b", "backup"), &on_b));
    }

    #[test]
    fn the_timeout_says_what_was_awaited() {
        let r = timed_out(&wait("my disk", Some("b")));
        assert_eq!(
            r.status,
            Status::NoMatch(
                "timed out after 1m 30s: no live, mounted disk matches \"my disk\" on host \"b\""
                    .into()
            )
        );
        assert!(r.body.is_empty());
        let mut w = wait("x", None);
        w.json = true;
        w.mounted = false;
        let r = timed_out(&w);
        assert_eq!(r.body, vec!["[]"]);
        assert_eq!(
            r.status.text(),
            "timed out after 1m 30s: no live disk matches \"x\""
        );
    }
}
