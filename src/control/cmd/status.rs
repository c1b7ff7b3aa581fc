//! `status [--json]`: uptime, counters, store size, watcher health and hooks.

use std::collections::BTreeMap;

use serde::Serialize;

use super::json_body;
use crate::control::Context;
use crate::inventory::WatcherHealth;
use crate::protocol::commands::Json;
use crate::protocol::frame::Reply;
use crate::telemetry::Stats;

#[derive(Serialize)]
struct Counters {
    packets_sent: u64,
    packets_received: u64,
    packets_rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    announces: u64,
    bytes_sent: u64,
    send_errors: u64,
    pings_answered: u64,
    pings_suppressed: u64,
    sessions_open: u64,
    sessions_total: u64,
    sessions_refused: u64,
    commands: u64,
    command_errors: u64,
    store_errors: u64,
    /// Local inventories written to the store (one per disk scan, and per mount change).
    inventory_writes: u64,
}

#[derive(Serialize)]
struct Out {
    node: String,
    node_id: String,
    version: &'static str,
    /// The git commit the binary was built from (null outside a checkout).
    commit: Option<&'static str>,
    uptime_secs: u64,
    store: String,
    store_bytes: u64,
    /// Key/value records in the store (one per host, plus peers, attaches, metadata).
    store_records: usize,
    /// `"ok"`, or `"failing"` while writes do not reach the disk (a full disk): the
    /// daemon answers from memory and retries.
    store_state: &'static str,
    /// Why the store's last write failed, while failing; else null.
    store_error: Option<String>,
    /// Since when it is failing (RFC 3339), while failing; else null.
    store_failing_since: Option<String>,
    /// Hosts whose latest inventory is known in memory but maybe not on disk yet.
    store_pending_hosts: usize,
    /// Times sled was reopened after write failures, since start.
    store_reopens: u64,
    /// Times the store was compacted (its log past twice its live data), since start.
    store_compactions: u64,
    disks_local: usize,
    disks_known: usize,
    peers: usize,
    peers_live: usize,
    multicast: String,
    /// Whether the Perl wire format is spoken too.
    legacy: bool,
    /// Disks left out of our last legacy datagram (it holds at most 1500 bytes).
    legacy_left_out: usize,
    /// Fingerprints of our keys, the signing key first; empty: unauthenticated.
    keys: Vec<String>,
    /// For each peer (by node name), the fingerprint of the key of its last datagram.
    peer_keys: BTreeMap<String, Option<String>>,
    /// The gossip listener; null when gossip does not run.
    gossip: Option<crate::peer::GossipReport>,
    counters: Counters,
    watchers: BTreeMap<&'static str, WatcherHealth>,
    /// Each configured hook with its counters (empty without hooks).
    hooks: Vec<crate::hooks::HookReport>,
    /// Hook runs waiting for a free slot now.
    hooks_queued: u64,
    /// At most this many hook commands run at once.
    hooks_max_running: usize,
    /// Fleet events the hooks missed (the bus ran ahead of them), since start.
    hooks_events_missed: u64,
}

fn seed_state(s: crate::peer::seeds::SeedState) -> &'static str {
    use crate::peer::seeds::SeedState::*;
    match s {
        Trying => "trying",
        Joined => "joined",
        NeverAnswered => "never answered",
        Myself => "is us",
    }
}

/// Build the reply.
pub fn apply(cmd: &Json, ctx: &Context) -> Reply {
    let s = ctx.stats();
    let store = ctx.store();

    let peers = store.peers();
    let health = store.health();
    let out = Out {
        node: ctx.node().name.clone(),
        node_id: ctx.node().id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        commit: Some(env!("DISKD_COMMIT")).filter(|c| !c.is_empty()),
        uptime_secs: ctx.uptime().as_secs(),
        store: store.path().display().to_string(),
        store_bytes: store.size_on_disk(),
        store_records: store.records(),
        store_state: health.state,
        store_error: health.error.clone(),
        store_failing_since: health.failing_since.map(crate::model::rfc3339),
        store_pending_hosts: health.pending_hosts,
        store_reopens: health.reopens,
        store_compactions: health.compactions,
        disks_local: store.local_inventory().len(),
        disks_known: store.sightings_len(),
        peers: peers.len(),
        peers_live: peers
            .iter()
            .filter(|p| p.is_live(crate::model::now_millis(), ctx.peer_expiry()))
            .count(),
        multicast: ctx.peers().status().state(),
        legacy: ctx.config().multicast.legacy,
        legacy_left_out: ctx.peers().status().legacy_left_out(),
        keys: ctx.peers().status().key_fingerprints().to_vec(),
        peer_keys: peers
            .iter()
            .map(|p| (p.node.clone(), p.key.clone()))
            .collect(),
        gossip: ctx.peers().status().gossip(),
        counters: Counters {
            packets_sent: Stats::get(&s.packets_sent),
            packets_received: Stats::get(&s.packets_received),
            packets_rejected: Stats::get(&s.packets_rejected),
            rejected_by_reason: ctx.peers().status().rejected(),
            announces: Stats::get(&s.announces),
            bytes_sent: Stats::get(&s.bytes_sent),
            send_errors: Stats::get(&s.send_errors),
            pings_answered: Stats::get(&s.pings_answered),
            pings_suppressed: Stats::get(&s.pings_suppressed),
            sessions_open: Stats::get(&s.sessions_open),
            sessions_total: Stats::get(&s.sessions_total),
            sessions_refused: Stats::get(&s.sessions_refused),
            commands: Stats::get(&s.commands),
            command_errors: Stats::get(&s.command_errors),
            store_errors: Stats::get(&s.store_errors),
            inventory_writes: Stats::get(&s.inventory_writes),
        },
        watchers: ctx.inventory().health(),
        hooks: ctx.hooks().report(),
        hooks_queued: ctx.hooks().queued(),
        hooks_max_running: ctx.hooks().max_running(),
        hooks_events_missed: ctx.hooks().events_missed(),
    };
    if cmd.json {
        return Reply::ok(json_body(&out));
    }
    let c = &out.counters;
    let mut body = vec![
            format!("node       {} ({})", out.node, out.node_id),
            format!("version    {}", env!("DISKD_LONG_VERSION")),
            format!(
                "uptime     {}",
                humantime::format_duration(std::time::Duration::from_secs(out.uptime_secs))
            ),
            format!(
                "store      {} ({} bytes, {} records)",
                out.store, out.store_bytes, out.store_records
            ),
            match &out.store_error {
                None => format!(
                    "store      ok; reopened {} times, compacted {} times",
                    out.store_reopens, out.store_compactions
                ),
                Some(e) => format!(
                    "store      FAILING since {}: {e}; answering from memory, {} hosts not yet durable, retrying",
                    out.store_failing_since.as_deref().unwrap_or("?"),
                    out.store_pending_hosts
                ),
            },
            format!(
                "disks      {} local, {} known; peers {} live of {}",
                out.disks_local, out.disks_known, out.peers_live, out.peers
            ),
            format!(
                "multicast  {}{}",
                out.multicast,
                match (out.legacy, out.legacy_left_out) {
                    (false, _) => String::new(),
                    (true, 0) => "; legacy (Perl) format on".to_string(),
                    (true, n) => format!(
                        "; legacy (Perl) format on, {n} disks left out of the 1500-byte legacy datagram"
                    ),
                }
            ),
            match out.keys.split_first() {
                None => "security   none: peer traffic is unauthenticated".to_string(),
                Some((first, rest)) => format!(
                    "security   signing key {first}{}; peers: {}",
                    if rest.is_empty() {
                        String::new()
                    } else {
                        format!(", also accepting {}", rest.join(", "))
                    },
                    if out.peer_keys.is_empty() {
                        "none yet".to_string()
                    } else {
                        out.peer_keys
                            .iter()
                            .map(|(n, k)| format!("{n} {}", k.as_deref().unwrap_or("-")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            },
            match &out.gossip {
                None => "gossip     off (needs security.key_files; gossip.enabled)".to_string(),
                Some(g) => format!(
                    "gossip     {} advertised as {}; members {} live of {}; bytes in {}, out {}{}",
                    g.listen,
                    g.advertise,
                    g.members_live,
                    g.members,
                    g.bytes_in,
                    g.bytes_out,
                    if g.seeds.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; seeds: {}",
                            g.seeds
                                .iter()
                                .map(|s| match &s.error {
                                    None => format!("{} {}", s.seed, seed_state(s.state)),
                                    Some(e) => format!("{} {} ({e})", s.seed, seed_state(s.state)),
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            },
            format!(
                "packets    sent {} ({} announces, {} bytes, {} send errors), received {}, rejected {}{}",
                c.packets_sent,
                c.announces,
                c.bytes_sent,
                c.send_errors,
                c.packets_received,
                c.packets_rejected,
                if c.rejected_by_reason.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        c.rejected_by_reason
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            format!(
                "pings      answered {}, suppressed {}",
                c.pings_answered, c.pings_suppressed
            ),
            format!(
                "sessions   {} open, {} total, {} refused; commands {} ({} errors)",
                c.sessions_open, c.sessions_total, c.sessions_refused, c.commands, c.command_errors
            ),
        ];
    for (name, h) in &out.watchers {
        let mut line = format!(
            "watcher    {name}: {}; every {}; {} ok, {} failed",
            h.state, h.interval, h.scans_ok, h.scans_failed
        );
        if let Some(t) = &h.last_ok {
            line.push_str(&format!("; last good scan {t}, {} found", h.found));
        }
        if let Some(t) = &h.running_since {
            line.push_str(&format!("; scanning since {t}"));
        }
        if let Some(e) = &h.last_error {
            line.push_str(&format!("; error: {e}"));
        }
        body.push(line);
    }
    if !out.hooks.is_empty() {
        body.push(format!(
            "hooks      {} configured, at most {} at once; {} queued; {} events missed",
            out.hooks.len(),
            out.hooks_max_running,
            out.hooks_queued,
            out.hooks_events_missed
        ));
    }
    for h in &out.hooks {
        body.push(format!(
            "{:<10} on {} match {:?} host {:?}{}: {}; runs {}, failures {}, timeouts {}, dropped {}, running {}",
            format!("hook[{}]", h.index),
            h.on.join(","),
            h.pattern,
            h.host,
            if h.local { " local" } else { "" },
            h.run,
            h.runs,
            h.failures,
            h.timeouts,
            h.dropped,
            h.running
        ));
    }
    Reply::ok(body)
}
