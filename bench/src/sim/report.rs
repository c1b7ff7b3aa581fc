//! The figures of a run: what is measured, and how it is printed (a table, or JSON with
//! the fields scripts read).

use super::*;

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct SimFigures {
    /// Initial nodes.
    pub nodes: usize,
    /// Disks per node.
    pub disks: usize,
    /// The seed.
    pub seed: u64,
    /// Hash of every datagram (see `net`).
    pub trace_digest: String,
    /// From the last start until every initial node held every initial node's disks.
    pub converged: Option<Duration>,
    /// Initial nodes that did.
    pub nodes_complete: usize,
    /// Per change: until 99 % of the other live nodes had it, and until all had it.
    pub changes: Vec<(Option<Duration>, Option<Duration>)>,
    /// Steady state, gossip bytes in + out per node per second: mean and max.
    pub steady_bps: Option<(f64, f64)>,
    /// Live nodes declared down by a node that could reach them.
    pub false_down: u64,
    /// Lost-peer events about live nodes from the partition on (across it, and renewals
    /// after it healed).
    pub partition_down: u64,
    /// At the end, (node, live member) pairs missing from failure detectors.
    pub missing_member_pairs: usize,
    /// Late joiners: until 99 % of the other live nodes had all their disks.
    pub join_known: Option<Duration>,
    /// Late joiners: until each held the whole fleet's disks.
    pub join_knows_all: Option<Duration>,
    /// After the partition healed: until every live node's failure detector held every
    /// other live node live again (status resolution: 1 s).
    pub heal: Option<Duration>,
    /// After the crash: until no live node held any crashed node live any more.
    pub kill_down_everywhere: Option<Duration>,
    /// After the crash, at the end: (live node, crashed node's disk) pairs no longer known.
    pub kill_disks_forgotten: usize,
    /// After restarting: until every live node held the restarted nodes live again, and
    /// their own failure detectors were whole (checked every 10 ms; the member counts come
    /// from status, published once a second).
    pub restart_back: Option<Duration>,
    /// Process RSS grown per node (KiB), from before the fleet to after the steady window.
    pub rss_per_node_kib: f64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Virtual time run.
    pub virtual_time: Duration,
    /// What happened to datagrams.
    pub net: net::NetCounts,
    /// Fleet events the observer missed (a node's bus overflowed between two looks).
    pub events_missed: u64,
    /// Whole inventories pulled, by all nodes (running at the end).
    pub pulls: u64,
    /// Changes applied from deltas, by all nodes (running at the end).
    pub deltas_applied: u64,
    /// Whole inventories sent unicast per (node, other node) pair, once the fleet had
    /// settled: one copy each way is 1.0.
    pub copies_per_pair: f64,
    /// Datagrams the nodes refused, by reason (all nodes running at the end).
    pub rejected: BTreeMap<&'static str, u64>,
}

pub(super) fn p99(mut v: Vec<Duration>) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(crate::percentile(&v, 0.99))
}

impl SimFigures {
    /// Whether every initial node ended up with every initial node's disks.
    #[cfg(test)]
    pub fn converged(&self) -> bool {
        self.converged.is_some()
    }

    /// Changes that reached every live node.
    pub fn changes_reaching_all(&self) -> usize {
        self.changes.iter().filter(|c| c.1.is_some()).count()
    }

    /// p99 over the changes of "until 99 % of nodes had it" (`None` if any never got
    /// there).
    pub fn change_p99_nodes_p99(&self) -> Option<Duration> {
        let v: Option<Vec<Duration>> = self.changes.iter().map(|c| c.0).collect();
        v.and_then(p99)
    }

    /// p99 over the changes of "until every node had it".
    pub fn change_all_p99(&self) -> Option<Duration> {
        let v: Option<Vec<Duration>> = self.changes.iter().map(|c| c.1).collect();
        v.and_then(p99)
    }

    /// The figures as the JSON object `--json` prints (field names are stable).
    pub fn to_json(&self) -> serde_json::Value {
        let s = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        json!({
            "nodes": self.nodes,
            "disks": self.disks,
            "seed": self.seed,
            "trace_digest": self.trace_digest,
            "converged_s": s(self.converged),
            "nodes_complete": self.nodes_complete,
            "change_p99_nodes_p99_s": s(self.change_p99_nodes_p99()),
            "change_all_p99_s": s(self.change_all_p99()),
            "changes": self.changes.len(),
            "changes_reaching_all": self.changes_reaching_all(),
            "steady_bytes_per_node_s_mean": self.steady_bps.map(|b| b.0.round()),
            "steady_bytes_per_node_s_max": self.steady_bps.map(|b| b.1.round()),
            "false_down": self.false_down,
            "partition_down": self.partition_down,
            "missing_member_pairs": self.missing_member_pairs,
            "join_known_s": s(self.join_known),
            "join_knows_all_s": s(self.join_knows_all),
            "heal_s": s(self.heal),
            "kill_down_everywhere_s": s(self.kill_down_everywhere),
            "kill_disks_forgotten": self.kill_disks_forgotten,
            "restart_back_s": s(self.restart_back),
            "rss_per_node_kib": self.rss_per_node_kib.round(),
            "wall_s": (self.wall.as_secs_f64() * 10.0).round() / 10.0,
            "virtual_s": self.virtual_time.as_secs_f64(),
            "datagrams": self.net.sent,
            "datagrams_lost": self.net.lost,
            "datagrams_partitioned": self.net.partitioned,
            "datagrams_dead": self.net.dead,
            "events_missed": self.events_missed,
            "pulls": self.pulls,
            "deltas_applied": self.deltas_applied,
            "rejected": self.rejected,
            "inventory_copies_per_pair": (self.copies_per_pair * 1000.0).round() / 1000.0,
        })
    }
}

pub(super) fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "never".into(),
    }
}

/// `diskd-bench sim`: run and print.
pub fn sim(o: &SimOptions) {
    if let Err(e) = o.check() {
        eprintln!("diskd-bench sim: {e}");
        std::process::exit(2);
    }
    let f = simulate(o);
    println!(
        "## Simulation: {} nodes x {} disks, seed {}, {:.0} s of virtual time in {:.1} s",
        f.nodes,
        f.disks,
        f.seed,
        f.virtual_time.as_secs_f64(),
        f.wall.as_secs_f64()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| converged (every node has every node's disks), after the last start | {} ({}/{} nodes) |", secs(f.converged), f.nodes_complete, f.nodes);
    println!(
        "| a change at 99 % of nodes, p99 / at every node, p99 ({} of {} reached all) | {} / {} |",
        f.changes_reaching_all(),
        f.changes.len(),
        secs(f.change_p99_nodes_p99()),
        secs(f.change_all_p99())
    );
    match f.steady_bps {
        Some((mean, max)) => println!(
            "| steady state, gossip in + out per node: mean / max | {mean:.0} B/s / {max:.0} B/s |"
        ),
        None => println!("| steady state | not reached |"),
    }
    println!(
        "| live nodes declared down (false) / across the partition | {} / {} |",
        f.false_down, f.partition_down
    );
    println!(
        "| (node, live member) pairs missing at the end | {} |",
        f.missing_member_pairs
    );
    if o.join_late.is_some() {
        println!(
            "| late joiners known by 99 % / each knows the fleet | {} / {} |",
            secs(f.join_known),
            secs(f.join_knows_all)
        );
    }
    if o.partition.is_some() {
        println!(
            "| views whole again after the partition healed | {} |",
            secs(f.heal)
        );
    }
    if o.kill.is_some() {
        println!(
            "| crashed nodes lost everywhere / their disks forgotten anywhere | {} / {} |",
            secs(f.kill_down_everywhere),
            f.kill_disks_forgotten
        );
    }
    if o.restart.is_some() {
        println!(
            "| restarted nodes live everywhere again | {} |",
            secs(f.restart_back)
        );
    }
    println!("| RSS per node | {:.0} KiB |", f.rss_per_node_kib);
    println!(
        "| datagrams: sent / lost / cut by the partition / to or from crashed nodes | {} / {} / {} / {} |",
        f.net.sent, f.net.lost, f.net.partitioned, f.net.dead
    );
    println!(
        "| whole inventories sent per pair of nodes, once settled (one copy each way: 1.0) | {:.3} |",
        f.copies_per_pair
    );
    println!(
        "| whole inventories pulled / changes applied from deltas (all nodes) | {} / {} |",
        f.pulls, f.deltas_applied
    );
    println!(
        "| datagrams refused by the nodes, by reason | {:?} |",
        f.rejected
    );
    println!("| trace digest | `{}` |", f.trace_digest);
    if o.json {
        println!("{}", f.to_json());
    }
}
