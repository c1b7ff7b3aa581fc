//! The figures of a gossip run, and how they are printed.

use super::*;

/// How long one change took to spread.
#[derive(Debug, Clone)]
pub struct ChangeTiming {
    /// The node whose inventory changed.
    pub node: usize,
    /// Until 99 % of the other nodes had it (`None`: not within the timeout).
    pub p99_nodes: Option<Duration>,
    /// Until every other node had it.
    pub all_nodes: Option<Duration>,
    /// Other nodes that had it when we stopped waiting.
    pub reached: usize,
}

/// Gossip bytes of the whole fleet over a window.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Window length.
    pub secs: f64,
    /// Per node per second, in and out together: mean and max over the nodes.
    pub mean_bps: f64,
    /// See `mean_bps`.
    pub max_bps: f64,
    /// Per node per second, sent only (mean, max).
    pub mean_out_bps: f64,
    /// See `mean_out_bps`.
    pub max_out_bps: f64,
    /// Process CPU over the window, as a share of one core.
    pub cpu_share: f64,
}

/// Everything the simulation measured.
#[derive(Debug, Clone, Default)]
pub struct GossipFigures {
    /// Fleet size.
    pub nodes: usize,
    /// Disks per node.
    pub disks: usize,
    /// Ramp over which nodes were started.
    pub ramp: Duration,
    /// From the first node's start until every node had every other node's disks.
    pub converged_after: Option<Duration>,
    /// The same, from the last node's start.
    pub converged_after_last_start: Option<Duration>,
    /// Nodes that had everything when we stopped waiting.
    pub nodes_complete: usize,
    /// Every node's foca view held every other node live (as last published, once a
    /// second), from the first node's start.
    pub members_after: Option<Duration>,
    /// Live members in each node's foca view after the steady window: min and mean.
    pub members_live: (usize, f64),
    /// For each node, how many other nodes its foca view lacked (or held down) after the
    /// steady window.
    pub members_missing: Vec<usize>,
    /// Process CPU from the first start to full convergence.
    pub converge_cpu: Duration,
    /// Gossip bytes sent per node from the first start to convergence (mean).
    pub converge_bytes_out_per_node: f64,
    /// The changes, in order.
    pub changes: Vec<ChangeTiming>,
    /// Steady state after convergence (before the changes).
    pub steady: Traffic,
    /// What the steady traffic was made of (kind, datagrams, bytes), over the last
    /// `steady_mix_from` seconds of the window (as much as the hub's log holds).
    pub steady_mix: Vec<(&'static str, u64, u64)>,
    /// See `steady_mix`.
    pub steady_mix_from: f64,
    /// RSS (KiB): before any store, stores opened with their own inventory, converged,
    /// after the changes; and the peak.
    pub rss_kib: [u64; 4],
    /// Peak RSS (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Bytes the hub's log of sent datagrams (the test harness's, the last 16,384) held at
    /// the end: part of the RSS, but no node's.
    pub hub_log_bytes: u64,
    /// Store size on tmpfs (sled's `size_on_disk`), per node, mean.
    pub store_bytes_per_node: f64,
    /// Sightings in one node's store at the end.
    pub sightings_per_node: usize,
    /// Datagrams the gossip hub dropped because an inbox was full.
    pub dropped_full: u64,
    /// Datagrams the gossip hub dropped by rule (none are set: should be 0).
    pub dropped_rule: u64,
    /// Datagrams sent on the multicast hub (multicast is off: should be 0).
    pub multicast_sent: usize,
    /// Inbox capacity used.
    pub inbox: usize,
    /// Load average (1 min) at the end: other work on the machine skews the timings.
    pub loadavg: String,
}

impl GossipFigures {
    /// Whether every node ended up with every other node's disks.
    pub fn converged(&self) -> bool {
        self.converged_after.is_some()
    }

    /// Whether every change reached every node.
    pub fn changes_reached_all(&self) -> bool {
        self.changes.iter().all(|c| c.all_nodes.is_some())
    }

    /// p50 and p99 of "until 99 % had it" and of "until all had it" (changes that never
    /// got there count as the timeout).
    pub fn change_percentiles(&self, timeout: Duration) -> [Duration; 4] {
        let mut p99: Vec<Duration> = self
            .changes
            .iter()
            .map(|c| c.p99_nodes.unwrap_or(timeout))
            .collect();
        let mut all: Vec<Duration> = self
            .changes
            .iter()
            .map(|c| c.all_nodes.unwrap_or(timeout))
            .collect();
        if p99.is_empty() {
            return [Duration::ZERO; 4];
        }
        p99.sort();
        all.sort();
        [
            crate::percentile(&p99, 0.5),
            crate::percentile(&p99, 0.99),
            crate::percentile(&all, 0.5),
            crate::percentile(&all, 0.99),
        ]
    }

    /// RSS grown per node, from before the stores to convergence (KiB): stores in memory,
    /// peer layers, their tasks, queued datagrams; see BENCHMARKS.md.
    pub fn rss_per_node_kib(&self) -> f64 {
        self.rss_kib[2].saturating_sub(self.rss_kib[0]) as f64 / self.nodes.max(1) as f64
    }
}

pub(super) fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "never".into(),
    }
}

/// `diskd-bench gossip`: run and print.
pub fn gossip(o: &GossipOptions) {
    let f = simulate(o);
    let timeout = Duration::from_secs(o.change_timeout);
    let [p99_50, p99_99, all_50, all_99] = f.change_percentiles(timeout);
    let kb = |b: f64| b / 1024.0;
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "## Gossip simulation: {} nodes x {} disks (started over {:.1} s)",
        f.nodes,
        f.disks,
        f.ramp.as_secs_f64()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| full convergence (every node has every node's disks), from the first start / from the last start | {} / {} |",
        secs(f.converged_after),
        secs(f.converged_after_last_start)
    );
    println!(
        "| nodes complete at the end of the wait | {} / {} |",
        f.nodes_complete, f.nodes
    );
    println!(
        "| every node's failure detector holds every other live (status, 1 s resolution) | {} |",
        secs(f.members_after)
    );
    println!(
        "| live members in each node's failure detector after the steady window: min / mean | {} / {:.1} (of {}) |",
        f.members_live.0,
        f.members_live.1,
        f.nodes - 1
    );
    let short: Vec<&usize> = f.members_missing.iter().filter(|m| **m > 0).collect();
    println!(
        "| nodes whose failure detector lacks some member then / (node, member) pairs missing | {} / {} |",
        short.len(),
        short.iter().copied().sum::<usize>()
    );
    println!(
        "| CPU until convergence (2 cores) / gossip sent per node until then | {:.1} s / {:.1} KiB |",
        f.converge_cpu.as_secs_f64(),
        kb(f.converge_bytes_out_per_node)
    );
    println!(
        "| one change ({} changes): until 99 % of nodes have it, p50 / p99 | {:.3} s / {:.3} s |",
        f.changes.len(),
        p99_50.as_secs_f64(),
        p99_99.as_secs_f64()
    );
    println!(
        "| one change: until every node has it, p50 / p99 | {:.3} s / {:.3} s |",
        all_50.as_secs_f64(),
        all_99.as_secs_f64()
    );
    println!(
        "| steady state, gossip in+out per node ({:.0} s window): mean / max | {:.2} KiB/s / {:.2} KiB/s |",
        f.steady.secs,
        kb(f.steady.mean_bps),
        kb(f.steady.max_bps)
    );
    println!(
        "| steady state, sent only per node: mean / max | {:.2} KiB/s / {:.2} KiB/s |",
        kb(f.steady.mean_out_bps),
        kb(f.steady.max_out_bps)
    );
    let mix: Vec<String> = f
        .steady_mix
        .iter()
        .map(|(kind, n, bytes)| format!("{kind} {n} ({:.1} KiB)", *bytes as f64 / 1024.0))
        .collect();
    println!(
        "| steady state, what was sent in the last {:.0} s of the window (datagrams) | {} |",
        f.steady_mix_from,
        mix.join(", ")
    );
    println!(
        "| steady state, process CPU (whole fleet) | {:.0} % of a core ({:.2} ms/s per node) |",
        f.steady.cpu_share * 100.0,
        f.steady.cpu_share * 1000.0 / f.nodes as f64
    );
    println!(
        "| RSS: before / stores opened / converged / after the changes / peak | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} MiB |",
        mib(f.rss_kib[0]),
        mib(f.rss_kib[1]),
        mib(f.rss_kib[2]),
        mib(f.rss_kib[3]),
        mib(f.hwm_kib)
    );
    println!(
        "| RSS per node (converged - before, / nodes) | {:.0} KiB |",
        f.rss_per_node_kib()
    );
    println!(
        "| store per node on tmpfs (not in RSS) / sightings per store | {:.0} KiB / {} |",
        f.store_bytes_per_node / 1024.0,
        f.sightings_per_node
    );
    println!(
        "| hub: dropped (inbox of {} full) / by rule / multicast datagrams / log held | {} / {} / {} / {:.1} MiB |",
        f.inbox,
        f.dropped_full,
        f.dropped_rule,
        f.multicast_sent,
        f.hub_log_bytes as f64 / 1_048_576.0
    );
    println!("| load average at the end | {} |", f.loadavg);
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "targets (set for 1,000 nodes; this run has {}): full convergence < 30 s: {}; a change at 99 % of nodes within 3 s (p99): {}; steady state < 2 KB/s per node (mean in+out): {}; every change reached every node: {}",
        f.nodes,
        verdict(f.converged() && f.converged_after.is_some_and(|d| d < Duration::from_secs(30))),
        verdict(!f.changes.is_empty() && p99_99 < Duration::from_secs(3)),
        if f.converged() {
            verdict(f.steady.mean_bps < 2000.0)
        } else {
            "not measurable (the fleet never converged)"
        },
        verdict(f.changes_reached_all())
    );
    if o.json {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let line = json!({
            "nodes": f.nodes,
            "disks": f.disks,
            "ramp_ms": f.ramp.as_millis() as u64,
            "converged_ms": ms(f.converged_after),
            "converged_after_last_start_ms": ms(f.converged_after_last_start),
            "nodes_complete": f.nodes_complete,
            "members_ms": ms(f.members_after),
            "members_live_min": f.members_live.0,
            "members_live_mean": f.members_live.1,
            "members_missing_pairs": f.members_missing.iter().sum::<usize>(),
            "nodes_missing_members": f.members_missing.iter().filter(|m| **m > 0).count(),
            "converge_cpu_s": f.converge_cpu.as_secs_f64(),
            "converge_bytes_out_per_node": f.converge_bytes_out_per_node,
            "change_p99nodes_p50_ms": p99_50.as_secs_f64() * 1000.0,
            "change_p99nodes_p99_ms": p99_99.as_secs_f64() * 1000.0,
            "change_all_p50_ms": all_50.as_secs_f64() * 1000.0,
            "change_all_p99_ms": all_99.as_secs_f64() * 1000.0,
            "changes": f.changes.iter().map(|c| json!({
                "node": c.node,
                "p99_nodes_ms": ms(c.p99_nodes),
                "all_ms": ms(c.all_nodes),
                "reached": c.reached,
            })).collect::<Vec<_>>(),
            "steady_secs": f.steady.secs,
            "steady_bps_mean": f.steady.mean_bps,
            "steady_bps_max": f.steady.max_bps,
            "steady_out_bps_mean": f.steady.mean_out_bps,
            "steady_out_bps_max": f.steady.max_out_bps,
            "steady_cpu_share": f.steady.cpu_share,
            "steady_mix_secs": f.steady_mix_from,
            "steady_mix": f.steady_mix.iter().map(|(k, n, b)| json!({"kind": k, "datagrams": n, "bytes": b})).collect::<Vec<_>>(),
            "rss_kib": f.rss_kib,
            "hwm_kib": f.hwm_kib,
            "rss_per_node_kib": f.rss_per_node_kib(),
            "hub_log_bytes": f.hub_log_bytes,
            "store_bytes_per_node": f.store_bytes_per_node,
            "sightings_per_node": f.sightings_per_node,
            "dropped_full": f.dropped_full,
            "dropped_rule": f.dropped_rule,
            "multicast_sent": f.multicast_sent,
            "inbox": f.inbox,
            "loadavg": f.loadavg,
        });
        println!("{line}");
    }
}
