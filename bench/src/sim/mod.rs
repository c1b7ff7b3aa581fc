//! `diskd-bench sim`: a gossip fleet of N real peer layers in virtual time.
//!
//! Every node is the daemon's own peer layer (`spawn_with`, as `diskd` runs it) with a
//! store kept in memory only (`Store::in_memory`), joined to the others by unicast gossip
//! over [`net::SimNet`]: every packet is still encoded, sealed, replay-checked and opened.
//! All of it runs on one thread under tokio's paused clock: time stands still while there
//! is work and jumps to the next timer when there is none, so a run takes the CPU it takes
//! and the figures are the protocol's, not this machine's. Everything random comes from
//! `--seed`; one seed and the same options give the same run, and the same
//! `trace_digest` (a hash of every datagram's time, ends, size and fate).
//!
//! The observer is a task among the nodes: every 10 ms of virtual time it starts what is
//! due (nodes, faults, changes), reads each node's store and status as `where` and
//! `status` would, and drains each node's fleet events (a disk appeared, a peer was lost),
//! which carry their exact virtual time.

pub mod net;
pub mod plan;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diskd::config::Config;
use diskd::flags::DaemonArgs;
use diskd::model::fleet::{FleetEvent, FleetEventKind};
use diskd::model::{DiskRecord, NodeInfo};
use diskd::peer::clock::Clock;
use diskd::peer::keys::Keyring;
use diskd::peer::transport::memory::MemoryHub;
use diskd::peer::{spawn_with, Deps, GossipSetup, IncomingMount, PeerHandle};
use diskd::store::Store;
use diskd::telemetry::Telemetry;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use net::SimNet;
pub use plan::SimOptions;

/// The fleet's one key.
const KEY: [u8; 32] = [7; 32];
/// Wall-clock time of the simulation's start (ms since the epoch): fixed, so that a run
/// does not depend on the day it runs.
const BASE_MS: u64 = 1_800_000_000_000;
/// How often the observer looks (often enough that no node's fleet event bus, 4,096
/// events, overflows while a whole fleet's disks arrive).
const SAMPLE: Duration = Duration::from_millis(10);
/// Between two timed changes.
const CHANGE_GAP: Duration = Duration::from_secs(3);

/// Node `i`'s address: 198.18.0.0/15, the benchmarking range, as `gossip` uses; nothing
/// leaves the process.
fn addr(i: usize) -> SocketAddr {
    crate::gossip::gossip_addr(i)
}

/// Disk `d` of node `p`.
fn disk(p: usize, d: usize) -> DiskRecord {
    crate::scale::sim_disk(p, d)
}

/// A node's silent multicast transport (multicast is off; `spawn_with` still opens one).
fn multicast_addr(i: usize) -> SocketAddr {
    SocketAddr::new(addr(i).ip(), 32003)
}

/// A running peer layer.
struct Running {
    handle: PeerHandle,
    shutdown: CancellationToken,
    local_changed: Arc<Notify>,
    fleet: broadcast::Receiver<Arc<FleetEvent>>,
    _mount_jobs: mpsc::Receiver<IncomingMount>,
}

/// One node of the fleet, as the observer keeps it.
struct Node {
    id: String,
    name: String,
    store: Store,
    disks: Vec<DiskRecord>,
    seeds: Vec<SocketAddr>,
    running: Option<Running>,
    /// Ground truth: running and reachable (not crashed).
    alive: bool,
    /// Layers started for it so far (a restart starts another).
    runs: u64,
    /// When its store first held every initial node's disks.
    complete_at: Option<Duration>,
}

/// One timed change: a disk added on `node` at `at`; when each other node first saw it.
struct Change {
    node: usize,
    uuid: String,
    at: Duration,
    seen: BTreeMap<usize, Duration>,
}

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

fn p99(mut v: Vec<Duration>) -> Option<Duration> {
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

/// The fleet and what the observer tracks.
struct Sim<'a> {
    o: &'a SimOptions,
    net: SimNet,
    mcast: MemoryHub,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    nodes: Vec<Node>,
    by_id: BTreeMap<String, usize>,
    t0: Instant,
    rng: StdRng,
    /// Which side of the partition each node is on, once chosen.
    side: Option<Vec<bool>>,
    changes: Vec<Change>,
    /// Crashed nodes.
    killed: Vec<usize>,
    restarted: Vec<usize>,
    restart_at: Option<Duration>,
    joiners: Vec<usize>,
    fig: SimFigures,
}

impl Sim<'_> {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn config(&self, i: usize) -> Config {
        let node = &self.nodes[i];
        let mut argv: Vec<String> = vec![
            "--node-name".into(),
            node.name.clone(),
            "--store".into(),
            format!("/nonexistent/diskd-sim/{i}"),
            // Liveness is the failure detector's; a long expiry keeps "still live" writes out.
            "--peer-expiry".into(),
            "1h".into(),
            // Only the gossip switch reads the path; the keyring is built directly.
            "--key-file".into(),
            "/nonexistent/diskd-sim.key".into(),
            "--no-multicast".into(),
            "--gossip-advertise".into(),
            addr(i).to_string(),
        ];
        for s in &node.seeds {
            argv.extend(["--seed".into(), s.to_string()]);
        }
        let args = DaemonArgs::parse_from(&argv).expect("the simulation's flags parse");
        Config::load(None, None, &args).expect("the simulation's configuration is valid")
    }

    /// Start (or restart) node `i`'s peer layer.
    fn start(&mut self, i: usize) {
        let config = self.config(i);
        let node = &mut self.nodes[i];
        node.runs += 1;
        let telemetry = Telemetry::default();
        let fleet = telemetry.fleet.subscribe();
        let local_changed = Arc::new(Notify::new());
        let (mount_tx, mount_rx) = mpsc::channel(8);
        let shutdown = self.shutdown.child_token();
        let mhub = self.mcast.clone();
        let wall = BASE_MS + self.t0.elapsed().as_millis() as u64;
        let handle = spawn_with(
            Deps {
                config: Arc::new(config),
                node: NodeInfo {
                    name: node.name.clone(),
                    id: node.id.clone(),
                    addr: Some(addr(i).ip().to_string()),
                },
                store: node.store.clone(),
                telemetry,
                local_changed: local_changed.clone(),
                mount_jobs: mount_tx,
                shutdown: shutdown.clone(),
            },
            &self.tracker,
            Keyring::from_keys(&[KEY]),
            Clock::following_tokio(wall),
            StdRng::seed_from_u64(
                self.o.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.runs,
            ),
            move |_| Ok(mhub.join(multicast_addr(i))),
            Some(GossipSetup {
                transport: self.net.bind(i, addr(i)),
                advertise: addr(i),
            }),
        );
        node.running = Some(Running {
            handle,
            shutdown,
            local_changed,
            fleet,
            _mount_jobs: mount_rx,
        });
        node.alive = true;
        self.net.set_alive(i, true);
        self.net.note(&format!("start {i}"));
    }

    /// Crash node `i`: nothing from or to it any more, and its layer stops (its goodbye
    /// goes nowhere).
    fn crash(&mut self, i: usize) {
        self.net.set_alive(i, false);
        self.nodes[i].alive = false;
        if let Some(r) = self.nodes[i].running.take() {
            r.shutdown.cancel();
        }
        self.net.note(&format!("crash {i}"));
    }

    /// Read every running node's fleet events since the last look.
    fn drain_events(&mut self) {
        let partitioned_ever = self.side.is_some();
        for i in 0..self.nodes.len() {
            let mut got = Vec::new();
            if let Some(r) = self.nodes[i].running.as_mut() {
                loop {
                    match r.fleet.try_recv() {
                        Ok(e) => got.push(e),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            self.fig.events_missed += n;
                        }
                        Err(_) => break,
                    }
                }
            }
            for e in got {
                let at = Duration::from_millis(e.time.saturating_sub(BASE_MS));
                let Some(&j) = self.by_id.get(&e.node_id) else {
                    continue;
                };
                match e.kind {
                    FleetEventKind::Appeared => {
                        let uuid = e.disk.as_ref().and_then(|d| d.uuid.as_deref());
                        for c in self.changes.iter_mut().filter(|c| c.node == j) {
                            if uuid == Some(c.uuid.as_str()) {
                                c.seen.entry(i).or_insert(at);
                            }
                        }
                    }
                    FleetEventKind::PeerLost => {
                        if self.restarted.contains(&j) || self.killed.contains(&j) {
                            // Its crash, told before or after it came back.
                        } else if self.nodes[j].alive {
                            // From the partition on, a live node declared down counts as
                            // the partition's: across it, or on the same side when its
                            // renewal after the heal (the other side declared it down)
                            // outlasted the goodbye grace.
                            if partitioned_ever {
                                self.fig.partition_down += 1;
                            } else {
                                self.fig.false_down += 1;
                                eprintln!(
                                    "sim: {:.2} s: node {i} declared live node {j} lost",
                                    at.as_secs_f64()
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Live nodes other than `j`.
    fn live_others(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&i| i != j && self.nodes[i].alive)
    }

    /// Every live node's failure detector holds every other live node live.
    fn views_complete(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.alive).count();
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .all(|n| member_gap(n, live) == 0)
    }
}

/// Live members missing from node `n`'s failure detector (as last published), when
/// `live` nodes are live in all.
fn member_gap(n: &Node, live: usize) -> usize {
    let seen = n
        .running
        .as_ref()
        .and_then(|r| r.handle.status().gossip())
        .map_or(0, |g| g.members_live);
    (live - 1).saturating_sub(seen)
}

/// Run the simulation (progress on stderr) and return its figures.
pub fn simulate(o: &SimOptions) -> SimFigures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let wall0 = std::time::Instant::now();
    let mut fig = rt.block_on(run(o));
    fig.wall = wall0.elapsed();
    fig
}

async fn run(o: &SimOptions) -> SimFigures {
    let wall0 = std::time::Instant::now();
    let n = o.nodes;
    let d = o.disks;
    let late = o.join_late.map_or(0, |j| j.count);
    let total = n + late;
    let mut rng = StdRng::seed_from_u64(o.seed);
    let rss0 = crate::store::rss_kib();
    let mut sim = Sim {
        o,
        net: SimNet::new(
            rng.gen(),
            total,
            (o.latency.min, o.latency.max),
            o.loss / 100.0,
        ),
        mcast: MemoryHub::new(16),
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        nodes: Vec::with_capacity(total),
        by_id: BTreeMap::new(),
        t0: Instant::now(),
        rng: StdRng::seed_from_u64(rng.gen()),
        side: None,
        changes: Vec::new(),
        killed: Vec::new(),
        restarted: Vec::new(),
        restart_at: None,
        joiners: (n..total).collect(),
        fig: SimFigures {
            nodes: n,
            disks: d,
            seed: o.seed,
            ..Default::default()
        },
    };
    // Every node's store, with its own inventory, before anything starts.
    for i in 0..total {
        let id = format!("{:032x}", rng.gen::<u128>());
        let name = format!("sim-{i:05}");
        let store = Store::in_memory(&id);
        let disks: Vec<DiskRecord> = (0..d).map(|k| disk(i, k)).collect();
        store
            .replace_local(&name, Some(&addr(i).ip().to_string()), &disks, BASE_MS)
            .expect("an in-memory store takes its inventory");
        // Initial nodes: node 0 and up to two random earlier ones; late joiners: three
        // random initial nodes.
        let mut seeds = Vec::new();
        if i > 0 {
            let pool = i.min(n);
            seeds.push(if i < n { 0 } else { rng.gen_range(0..n) });
            for _ in 0..2 {
                if pool > 1 {
                    let s = rng.gen_range(1..pool);
                    if !seeds.contains(&s) {
                        seeds.push(s);
                    }
                }
            }
        }
        sim.by_id.insert(id.clone(), i);
        sim.nodes.push(Node {
            id,
            name,
            store,
            disks,
            seeds: seeds.into_iter().map(addr).collect(),
            running: None,
            alive: false,
            runs: 0,
            complete_at: None,
        });
    }
    let want = n * d;
    let start_at = |i: usize| o.start_over.mul_f64(i as f64 / n as f64);
    let last_start = start_at(n - 1);
    let mut started = 0;
    let mut steady: Option<(Duration, Vec<u64>)> = None;
    let mut steady_end: Option<Duration> = None;
    let mut next_change: Option<Duration> = None;
    let mut late_done = vec![None::<Duration>; late];
    let mut heal_from: Option<Duration> = None;
    let mut last_report = Duration::ZERO;
    eprintln!(
        "sim: {n} nodes x {d} disks (seed {}), started over {:?}, run {:?} of virtual time",
        o.seed, o.start_over, o.duration
    );
    loop {
        let now = sim.now();
        // Starts.
        while started < n && start_at(started) <= now {
            sim.start(started);
            started += 1;
        }
        if let Some(j) = o.join_late {
            if now >= j.at && sim.nodes[n].runs == 0 {
                for i in n..total {
                    sim.start(i);
                }
            }
        }
        // Faults.
        if let Some(p) = o.partition {
            if now >= p.start && sim.side.is_none() {
                let mut ids: Vec<usize> = (0..n).collect();
                ids.shuffle(&mut sim.rng);
                let cut = ((n as f64) * p.fraction).round() as usize;
                let mut side = vec![false; total];
                for &i in &ids[..cut] {
                    side[i] = true;
                }
                sim.net.partition(Some(side.clone()));
                sim.side = Some(side);
                sim.net.note("partition");
                eprintln!(
                    "sim: {:.1} s: partition, {cut} nodes cut off",
                    now.as_secs_f64()
                );
            }
            if now >= p.start + p.length && heal_from.is_none() && sim.side.is_some() {
                sim.net.partition(None);
                heal_from = Some(now);
                sim.net.note("heal");
                eprintln!("sim: {:.1} s: partition healed", now.as_secs_f64());
            }
        }
        if let Some(k) = o.kill {
            if now >= k.at && sim.killed.is_empty() {
                let mut ids: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].alive).collect();
                ids.shuffle(&mut sim.rng);
                let count = ((n as f64) * k.fraction).round().max(1.0) as usize;
                sim.killed = ids[..count.min(ids.len())].to_vec();
                for i in sim.killed.clone() {
                    sim.crash(i);
                }
                eprintln!("sim: {:.1} s: {count} nodes crashed", now.as_secs_f64());
            }
        }
        if let Some(r) = o.restart {
            if now >= r.at && sim.restarted.is_empty() {
                let mut ids: Vec<usize> = (0..n)
                    .filter(|&i| sim.nodes[i].alive && !sim.killed.contains(&i))
                    .collect();
                ids.shuffle(&mut sim.rng);
                let count = ((n as f64) * r.fraction).round().max(1.0) as usize;
                sim.restarted = ids[..count.min(ids.len())].to_vec();
                for i in sim.restarted.clone() {
                    sim.crash(i);
                }
                eprintln!(
                    "sim: {:.1} s: {count} nodes crashed, to restart",
                    now.as_secs_f64()
                );
            }
            if now >= r.at + r.down && sim.restart_at.is_none() && !sim.restarted.is_empty() {
                sim.restart_at = Some(now);
                for i in sim.restarted.clone() {
                    sim.start(i);
                }
                eprintln!(
                    "sim: {:.1} s: restarted from their stores",
                    now.as_secs_f64()
                );
            }
        }
        // Timed changes, after the steady window.
        if let (Some(at), true) = (next_change, sim.changes.len() < o.changes) {
            if now >= at {
                let candidates: Vec<usize> = (0..n)
                    .filter(|&i| sim.nodes[i].alive && !sim.restarted.contains(&i))
                    .collect();
                if let Some(&w) = candidates.get(sim.rng.gen_range(0..candidates.len().max(1))) {
                    let k = sim.changes.len();
                    let new = disk(w, d + k);
                    let uuid = new.uuid.clone().unwrap_or_default();
                    let node = &mut sim.nodes[w];
                    node.disks.push(new);
                    let wall = BASE_MS + now.as_millis() as u64;
                    node.store
                        .replace_local(
                            &node.name,
                            Some(&addr(w).ip().to_string()),
                            &node.disks,
                            wall,
                        )
                        .expect("an in-memory store takes its inventory");
                    if let Some(r) = &node.running {
                        r.local_changed.notify_one();
                    }
                    sim.net.note(&format!("change {w}"));
                    sim.changes.push(Change {
                        node: w,
                        uuid,
                        at: now,
                        seen: BTreeMap::new(),
                    });
                }
                next_change = Some(at + CHANGE_GAP);
            }
        }

        // Observe.
        sim.drain_events();
        for i in 0..n {
            let node = &mut sim.nodes[i];
            if node.complete_at.is_none()
                && node.running.is_some()
                && node.store.sightings_len() >= want
            {
                node.complete_at = Some(now);
            }
        }
        if sim.fig.converged.is_none()
            && started == n
            && sim.nodes[..n].iter().all(|x| x.complete_at.is_some())
        {
            sim.fig.converged = Some(now.saturating_sub(last_start));
            eprintln!(
                "sim: {:.1} s: converged, {:.2} s after the last start",
                now.as_secs_f64(),
                now.saturating_sub(last_start).as_secs_f64()
            );
        }
        // Steady state: from convergence (or the end of the starts, if it never comes)
        // plus the settling time.
        let settled = sim
            .fig
            .converged
            .map(|c| (last_start + c).max(last_start + o.settle));
        if steady.is_none() && settled.is_some_and(|s| now >= s) {
            let sent: u64 = sim.nodes[..n]
                .iter()
                .filter_map(|x| x.running.as_ref()?.handle.status().gossip())
                .map(|g| g.inventories_sent)
                .sum();
            sim.fig.copies_per_pair = sent as f64 / (n * (n - 1)) as f64;
            let (out, inn) = sim.net.bytes();
            let sum: Vec<u64> = out.iter().zip(&inn).map(|(a, b)| a + b).collect();
            steady = Some((now, sum));
        }
        if let (Some((from, before)), None) = (&steady, steady_end) {
            if now >= *from + o.steady {
                let secs = (now - *from).as_secs_f64();
                let (out, inn) = sim.net.bytes();
                let rates: Vec<f64> = (0..n)
                    .filter(|&i| sim.nodes[i].alive)
                    .map(|i| (out[i] + inn[i] - before[i]) as f64 / secs)
                    .collect();
                let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
                let max = rates.iter().copied().fold(0.0, f64::max);
                sim.fig.steady_bps = Some((mean, max));
                sim.fig.rss_per_node_kib =
                    crate::store::rss_kib().saturating_sub(rss0) as f64 / total as f64;
                steady_end = Some(now);
                next_change = Some(now);
                eprintln!(
                    "sim: {:.1} s: steady state {:.0} B/s per node (mean), {:.0} B/s (max)",
                    now.as_secs_f64(),
                    mean,
                    max
                );
            }
        }
        // Late joiners: the whole fleet known by each, and each known by 99 %.
        if let Some(j) = o.join_late {
            for (k, i) in sim.joiners.clone().into_iter().enumerate() {
                if late_done[k].is_none()
                    && sim.nodes[i].running.is_some()
                    && sim.nodes[i].store.sightings_len() >= total * d
                {
                    late_done[k] = Some(now.saturating_sub(j.at));
                }
            }
            if sim.fig.join_knows_all.is_none() && late_done.iter().all(Option::is_some) {
                sim.fig.join_knows_all = late_done.iter().flatten().max().copied();
            }
            if sim.fig.join_known.is_none() && now >= j.at && sim.nodes[n].runs > 0 {
                let others: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].alive).collect();
                let need = (others.len() as f64 * 0.99).ceil() as usize;
                let knowing = others
                    .iter()
                    .filter(|&&i| {
                        sim.joiners.iter().all(|&x| {
                            sim.nodes[i]
                                .store
                                .find(sim.nodes[x].disks[0].uuid.as_deref().unwrap_or_default())
                                .is_ok_and(|s| !s.is_empty())
                        })
                    })
                    .count();
                if knowing >= need {
                    sim.fig.join_known = Some(now - j.at);
                }
            }
        }
        if let (Some(h), None) = (heal_from, sim.fig.heal) {
            if sim.views_complete() {
                sim.fig.heal = Some(now - h);
            }
        }
        if let (Some(k), None) = (o.kill, sim.fig.kill_down_everywhere) {
            // Not live in any live node's store any more (as `where` and `peers` say).
            let wall = BASE_MS + now.as_millis() as u64;
            if !sim.killed.is_empty()
                && sim.killed.iter().all(|&j| {
                    sim.live_others(j).all(|i| {
                        !sim.nodes[i].store.host_is_live(
                            &sim.nodes[j].id,
                            wall,
                            Duration::from_secs(3600),
                        )
                    })
                })
            {
                sim.fig.kill_down_everywhere = Some(now.saturating_sub(k.at));
            }
        }
        if let (Some(r), None) = (sim.restart_at, sim.fig.restart_back) {
            // Live again in every live node's store (as `where` and `peers` say), and its
            // failure detector whole again.
            let wall = BASE_MS + now.as_millis() as u64;
            let all = sim.restarted.iter().all(|&j| {
                member_gap(&sim.nodes[j], sim.nodes.iter().filter(|x| x.alive).count()) == 0
                    && sim.live_others(j).all(|i| {
                        sim.nodes[i].store.host_is_live(
                            &sim.nodes[j].id,
                            wall,
                            Duration::from_secs(3600),
                        )
                    })
            });
            if all {
                sim.fig.restart_back = Some(now.saturating_sub(r));
            }
        }
        if now >= last_report + Duration::from_secs(10) {
            last_report = now;
            let complete = sim.nodes[..n]
                .iter()
                .filter(|x| x.complete_at.is_some())
                .count();
            eprintln!(
                "sim: {:.0} s virtual, {:.1} s wall: {complete}/{n} nodes complete, {} datagrams",
                now.as_secs_f64(),
                wall0.elapsed().as_secs_f64(),
                sim.net.counts().sent
            );
        }
        if now >= o.duration {
            break;
        }
        tokio::time::sleep(SAMPLE).await;
    }

    let end = sim.now();
    let live = sim.nodes.iter().filter(|x| x.alive).count();
    for (i, x) in sim.nodes.iter().enumerate().filter(|(_, x)| x.alive) {
        let gap = member_gap(x, live);
        if gap > 0 {
            let members = x.running.as_ref().and_then(|r| r.handle.status().gossip());
            eprintln!(
                "sim: node {i} misses {gap} live members ({:?} known, {:?} live)",
                members.as_ref().map(|g| g.members),
                members.as_ref().map(|g| g.members_live)
            );
        }
        sim.fig.missing_member_pairs += gap;
    }
    sim.fig.nodes_complete = sim.nodes[..n]
        .iter()
        .filter(|x| x.complete_at.is_some())
        .count();
    for c in &sim.changes {
        let others: Vec<usize> = sim.live_others(c.node).collect();
        let mut times: Vec<Duration> = others
            .iter()
            .filter_map(|i| c.seen.get(i))
            .map(|t| t.saturating_sub(c.at))
            .collect();
        times.sort();
        let need = ((others.len() as f64) * 0.99).ceil() as usize;
        let t99 = (need > 0 && times.len() >= need).then(|| times[need - 1]);
        let all = (times.len() == others.len()).then(|| times.last().copied().unwrap_or_default());
        sim.fig.changes.push((t99, all));
    }
    for &j in &sim.killed {
        for k in 0..d {
            let uuid = sim.nodes[j].disks[k].uuid.clone().unwrap_or_default();
            sim.fig.kill_disks_forgotten += sim
                .live_others(j)
                .filter(|&i| {
                    sim.nodes[i]
                        .store
                        .find(&uuid)
                        .map_or(true, |s| s.is_empty())
                })
                .count();
        }
    }
    if sim.fig.rss_per_node_kib == 0.0 {
        sim.fig.rss_per_node_kib =
            crate::store::rss_kib().saturating_sub(rss0) as f64 / total as f64;
    }
    for x in sim.nodes.iter().filter_map(|x| x.running.as_ref()) {
        for (reason, n) in x.handle.status().rejected() {
            *sim.fig.rejected.entry(reason).or_default() += n;
        }
        if let Some(g) = x.handle.status().gossip() {
            sim.fig.pulls += g.pulls_sent;
            sim.fig.deltas_applied += g.deltas_applied;
        }
    }
    sim.fig.virtual_time = end;
    sim.fig.net = sim.net.counts();
    sim.fig.trace_digest = sim.net.digest();

    // Stop every layer (their goodbyes still count nothing: the digest is taken).
    sim.shutdown.cancel();
    sim.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(60), sim.tracker.wait()).await;
    sim.fig
}

fn secs(d: Option<Duration>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The CI run: 200 nodes with a fixed seed, 5 more joining late, 5 % crashing. Asserts
    /// correctness only: every node converges, every change reaches every node, no live
    /// node is declared down, every view is whole, the joiners know the fleet and are
    /// known, the crashed nodes are lost everywhere with their disks kept as last known;
    /// and a second run of the same seed gives the same digest. No timing is asserted.
    #[test]
    fn two_hundred_nodes_converge_spread_every_change_and_repeat_exactly() {
        let o = SimOptions {
            duration: Duration::from_secs(90),
            steady: Duration::from_secs(10),
            settle: Duration::from_secs(20),
            changes: 5,
            join_late: Some(plan::JoinLate {
                count: 5,
                at: Duration::from_secs(35),
            }),
            kill: Some(plan::Kill {
                fraction: 0.05,
                at: Duration::from_secs(60),
            }),
            ..SimOptions::sized(200, 4)
        };
        let a = simulate(&o);
        assert!(
            a.converged(),
            "{}/{} nodes complete",
            a.nodes_complete,
            a.nodes
        );
        assert_eq!(a.changes.len(), 5);
        assert_eq!(a.changes_reaching_all(), 5, "{:?}", a.changes);
        assert_eq!(a.false_down, 0);
        assert_eq!(a.missing_member_pairs, 0);
        assert!(
            a.join_known.is_some() && a.join_knows_all.is_some(),
            "{a:?}"
        );
        assert!(a.kill_down_everywhere.is_some(), "{a:?}");
        assert_eq!(a.kill_disks_forgotten, 0);
        assert_eq!(a.events_missed, 0);
        assert!(a.deltas_applied > 0, "changes travel as deltas");
        assert!(
            (0.99..=1.01).contains(&a.copies_per_pair),
            "a join costs one copy of an inventory each way: {}",
            a.copies_per_pair
        );
        let b = simulate(&o);
        assert_eq!(a.trace_digest, b.trace_digest, "one seed, one run");
        assert_eq!(a.net.sent, b.net.sent);
        let c = simulate(&SimOptions {
            seed: 2,
            duration: Duration::from_secs(15),
            changes: 0,
            join_late: None,
            kill: None,
            ..o
        });
        assert_ne!(a.trace_digest, c.trace_digest, "another seed, another run");
    }
}
