//! `status [--json]`: uptime, counters, store size, watcher health and hooks.

use std::collections::BTreeMap;

use serde::Serialize;

use super::json_body;
use crate::control::Context;
use crate::inventory::WatcherHealth;
use crate::protocol::commands::Json;
use crate::protocol::frame::Reply;
use crate::store::StoreHealth;
use crate::telemetry::Stats;

serde_with::with_prefix!(prefix_store "store_");

/// The counters of `status`, as `status --json` names them.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// Datagrams sent by the peer layer.
    pub packets_sent: u64,
    /// Datagrams received by the peer layer.
    pub packets_received: u64,
    /// Datagrams dropped as invalid (the sum of `rejected_by_reason`).
    pub packets_rejected: u64,
    /// Dropped datagrams by reason.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Inventory announces sent (each may be several datagrams).
    pub announces: u64,
    /// Bytes of datagrams sent.
    pub bytes_sent: u64,
    /// Sends that failed with a transient error and were dropped.
    pub send_errors: u64,
    /// Pings answered with an announce.
    pub pings_answered: u64,
    /// Pings folded into an announce already planned (the rate limit).
    pub pings_suppressed: u64,
    /// Control sessions open now.
    pub sessions_open: u64,
    /// Control sessions accepted since start.
    pub sessions_total: u64,
    /// Control sessions turned away (the sum of `sessions_refused_by_reason`).
    pub sessions_refused: u64,
    /// Refused sessions by reason: `user_share` (the uid held
    /// `control.max_sessions_per_user`), `table_full` (no session left it may use).
    pub sessions_refused_by_reason: BTreeMap<&'static str, u64>,
    /// Commands run.
    pub commands: u64,
    /// Commands that got an error reply.
    pub command_errors: u64,
    /// Store writes that failed.
    pub store_errors: u64,
    /// Local inventories written to the store (one per disk scan, and per mount change).
    pub inventory_writes: u64,
    /// Readers of the fleet's changes now: `events` and `wait` sessions, HTTP event
    /// streams and the hook runner. A stream counted here sees every later change.
    pub event_listeners: u64,
}

/// What `status` reports, as `status --json` prints it: the socket's `status`, HTTP's
/// `/api/v1/status` and `/metrics` all read this one report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This node's name.
    pub node: String,
    /// This node's permanent id.
    pub node_id: String,
    /// diskd's version.
    pub version: &'static str,
    /// The git commit the binary was built from (null outside a checkout).
    pub commit: Option<&'static str>,
    /// Seconds since the daemon started serving.
    pub uptime_secs: u64,
    /// The store's directory.
    pub store: String,
    /// The store's size on disk.
    pub store_bytes: u64,
    /// Key/value records in the store (one per host, plus peers, attaches, metadata).
    pub store_records: usize,
    /// Whether the store's writes reach the disk: `store_state`, `store_error`,
    /// `store_failing_since`, ...
    #[serde(flatten, with = "prefix_store")]
    pub store_health: StoreHealth<String>,
    /// Disks in this machine's inventory.
    pub disks_local: usize,
    /// Disk records known, every host's, live or not.
    pub disks_known: usize,
    /// Peers ever heard.
    pub peers: usize,
    /// Peers live now.
    pub peers_live: usize,
    /// Most peers remembered (`peers.max`).
    pub peers_max: usize,
    /// Datagrams of newcomers refused since start because the peer table was full of
    /// peers that are live or whose disks the store keeps (history is never deleted to
    /// make room); a refused newcomer that keeps announcing counts each time.
    pub peers_refused: u64,
    /// Inventories refused since start because they would take the peers' disk records
    /// past `peers.max_records`.
    pub records_refused: u64,
    /// The multicast sockets' state.
    pub multicast: String,
    /// Whether the Perl wire format is spoken too.
    pub legacy: bool,
    /// Disks left out of our last legacy datagram (it holds at most 1500 bytes).
    pub legacy_left_out: usize,
    /// Fingerprints of our keys, the signing key first; empty: unauthenticated.
    pub keys: Vec<String>,
    /// For each peer (by node name), the fingerprint of the key of its last datagram.
    pub peer_keys: BTreeMap<String, Option<String>>,
    /// The gossip listener; null when gossip does not run.
    pub gossip: Option<crate::peer::GossipReport>,
    /// The HTTP listener's bound address (the port chosen when configured as 0); null
    /// when HTTP is off.
    pub http: Option<String>,
    /// The counters.
    pub counters: Counters,
    /// Each watcher's health, by name.
    pub watchers: BTreeMap<&'static str, WatcherHealth>,
    /// Each configured hook with its counters (empty without hooks).
    pub hooks: Vec<crate::hooks::HookReport>,
    /// Hook runs waiting for a free slot now.
    pub hooks_queued: u64,
    /// At most this many hook commands run at once.
    pub hooks_max_running: usize,
    /// Fleet events the hooks missed (the bus ran ahead of them), since start.
    pub hooks_events_missed: u64,
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

/// Gather the report. Measures the store on disk: call it off the runtime (`status` runs
/// on a blocking thread).
pub fn report(ctx: &Context) -> StatusReport {
    let s = ctx.stats();
    let store = &ctx.store;

    let peers = store.peers();
    let rejected = ctx.peers.status().rejected();
    StatusReport {
        node: ctx.node.name.clone(),
        node_id: ctx.node.id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        commit: Some(env!("DISKD_COMMIT")).filter(|c| !c.is_empty()),
        uptime_secs: ctx.uptime().as_secs(),
        store: store.path().display().to_string(),
        store_bytes: store.size_on_disk(),
        store_records: store.records(),
        store_health: store.health().map_time(crate::model::rfc3339),
        disks_local: store.local_inventory().len(),
        disks_known: store.sightings_len(),
        peers: peers.len(),
        peers_live: peers
            .iter()
            .filter(|p| p.is_live(crate::model::now_millis(), ctx.peer_expiry()))
            .count(),
        peers_max: ctx.config.peers.max,
        peers_refused: rejected.get("peer_table_full").copied().unwrap_or(0),
        records_refused: rejected.get("over_record_budget").copied().unwrap_or(0),
        multicast: ctx.peers.status().state(),
        legacy: ctx.config.multicast.legacy,
        legacy_left_out: ctx.peers.status().legacy_left_out(),
        keys: ctx.peers.status().key_fingerprints().to_vec(),
        peer_keys: peers
            .iter()
            .map(|p| (p.node.clone(), p.key.clone()))
            .collect(),
        gossip: ctx.peers.status().gossip(),
        http: ctx.http_addr.map(|a| a.to_string()),
        counters: Counters {
            packets_sent: Stats::get(&s.packets_sent),
            packets_received: Stats::get(&s.packets_received),
            packets_rejected: Stats::get(&s.packets_rejected),
            rejected_by_reason: rejected,
            announces: Stats::get(&s.announces),
            bytes_sent: Stats::get(&s.bytes_sent),
            send_errors: Stats::get(&s.send_errors),
            pings_answered: Stats::get(&s.pings_answered),
            pings_suppressed: Stats::get(&s.pings_suppressed),
            sessions_open: Stats::get(&s.sessions_open),
            sessions_total: Stats::get(&s.sessions_total),
            sessions_refused: Stats::get(&s.sessions_refused),
            sessions_refused_by_reason: s.refused_by_reason(),
            commands: Stats::get(&s.commands),
            command_errors: Stats::get(&s.command_errors),
            store_errors: Stats::get(&s.store_errors),
            inventory_writes: Stats::get(&s.inventory_writes),
            event_listeners: ctx.fleet().listeners() as u64,
        },
        watchers: ctx.inventory.health(),
        hooks: ctx.hooks.report(),
        hooks_queued: ctx.hooks.queued(),
        hooks_max_running: ctx.hooks.max_running(),
        hooks_events_missed: ctx.hooks.events_missed(),
    }
}

/// `items` joined by `, ` between `before` and `after`; nothing at all when there are none.
fn listed(before: &str, items: impl Iterator<Item = String>, after: &str) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("{before}{}{after}", items.join(", "))
    }
}

/// Build the reply.
pub fn apply(cmd: &Json, ctx: &Context) -> Reply {
    let out = report(ctx);
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
            match &out.store_health.error {
                None => format!(
                    "store      ok; reopened {} times, compacted {} times",
                    out.store_health.reopens, out.store_health.compactions
                ),
                Some(e) => format!(
                    "store      FAILING since {}: {e}; answering from memory, {} hosts not yet durable, retrying",
                    out.store_health.failing_since.as_deref().unwrap_or("?"),
                    out.store_health.pending_hosts
                ),
            },
            format!(
                "disks      {} local, {} known; peers {} live of {}{}{}",
                out.disks_local,
                out.disks_known,
                out.peers_live,
                out.peers,
                if out.peers_refused > 0 {
                    format!(
                        "; peer table full ({} max), {} datagrams of newcomers refused",
                        out.peers_max, out.peers_refused
                    )
                } else {
                    String::new()
                },
                if out.records_refused > 0 {
                    format!(
                        "; record budget full, {} inventories refused",
                        out.records_refused
                    )
                } else {
                    String::new()
                }
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
                    listed(", also accepting ", rest.iter().cloned(), ""),
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
                    "gossip     {} advertised as {}; members {} live of {}; bytes in {}, out {}; changes applied from deltas {}; inventories pulled {}, pulled from us {}, sent {}{}",
                    g.listen,
                    g.advertise,
                    g.members_live,
                    g.members,
                    g.bytes_in,
                    g.bytes_out,
                    g.deltas_applied,
                    g.pulls_sent,
                    g.pulls_answered,
                    g.inventories_sent,
                    listed("; seeds: ", g.seeds.iter().map(|s| match &s.error {
                        None => format!("{} {}", s.seed, seed_state(s.state)),
                        Some(e) => format!("{} {} ({e})", s.seed, seed_state(s.state)),
                    }), ""),
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
                listed(" (", c.rejected_by_reason.iter().map(|(k, v)| format!("{k} {v}")), ")")
            ),
            format!(
                "pings      answered {}, suppressed {}",
                c.pings_answered, c.pings_suppressed
            ),
            format!(
                "sessions   {} open, {} total, {} refused{}; commands {} ({} errors); {} listening for events",
                c.sessions_open,
                c.sessions_total,
                c.sessions_refused,
                listed(
                    " (",
                    c.sessions_refused_by_reason
                        .iter()
                        .map(|(k, v)| format!("{} {v}", k.replace('_', " "))),
                    ")"
                ),
                c.commands,
                c.command_errors,
                c.event_listeners
            ),
        ];
    if let Some(addr) = &out.http {
        let auth = match ctx.config.http.as_ref().and_then(|h| h.token_file.as_ref()) {
            Some(_) => "every request needs the bearer token",
            None => "loopback, no token",
        };
        body.push(format!("http       http://{addr}/ ({auth})"));
    }
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
