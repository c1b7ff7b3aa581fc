//! `diskd-bench gossip`: a whole gossip fleet in one process.
//!
//! N complete peer layers (the same `spawn_with` the daemon's `spawn` calls), each with a
//! store of its own, joined only by unicast gossip over an in-memory [`MemoryHub`]: every
//! packet is still encoded, sealed, replay-checked and opened as on a real network, so
//! the figures are the real protocol's, minus the kernel and the wire. Multicast is off
//! (`--no-multicast`), as across routers; its hub is there only because `spawn_with`
//! needs an `open` for it, and stays silent.
//!
//! One real clock (`Clock::system()`, not paused time), so timers, pacing and store
//! writes take the time they take; but every layer shares this host's cores, so the
//! figures hold only while the host keeps up with N layers (the CPU share is printed; at
//! 1,000 nodes two cores do not, see BENCHMARKS.md). The observer (this thread) reads
//! each node's store and status directly, as `where` and `status` would, without
//! touching the runtime the nodes run on.
//!
//! Stores live on tmpfs (`/dev/shm`, when there is one): the daemon's store code without
//! hundreds of sleds syncing to one disk. They are opened with
//! `Store::open_sharing_process` (flushes wait on the calling thread: many sleds in one
//! process otherwise hang in sled's shared thread pool). tmpfs pages are not process
//! RSS, so the store size is reported apart.

mod report;
pub use report::*;

mod observe;
use observe::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskd::config::Config;
use diskd::flags::DaemonArgs;
use diskd::model::{DiskRecord, NodeInfo};
use diskd::peer::clock::Clock;
use diskd::peer::keys::Keyring;
use diskd::peer::transport::memory::MemoryHub;
use diskd::peer::wire::{self, Body};
use diskd::peer::{spawn_with, Deps, GossipSetup, IncomingMount, PeerHandle};
use diskd::store::{Owner, Store};
use diskd::telemetry::Telemetry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{cpu, rss_kib};

/// Datagrams a gossip inbox holds: what the daemon's gossip socket buffer holds when the
/// kernel grants the 8 MiB it asks for (16 MiB of kernel accounting at about 2.5 KiB per
/// datagram). With a default `net.core.rmem_max` (208 KiB) a real socket holds far fewer
/// (about 170); `--inbox 170` simulates that.
pub const REAL_INBOX: usize = 6_500;

/// The fleet's one key (the peer tests' key).
const KEY: [u8; 32] = [7; 32];

/// Options of `diskd-bench gossip`.
#[derive(Debug, Clone, clap::Args)]
pub struct GossipOptions {
    /// Nodes in the fleet (all in this process).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Disks per node.
    #[arg(long, default_value_t = 4)]
    pub disks: usize,
    /// Nodes are started evenly over this many milliseconds (node 0 first).
    #[arg(long, default_value_t = 5000)]
    pub ramp_ms: u64,
    /// Inventory changes to time, each on a random node.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Quiet seconds after full convergence before the steady-state window.
    #[arg(long, default_value_t = 10)]
    pub settle: u64,
    /// Length of the steady-state traffic window, seconds.
    #[arg(long, default_value_t = 30)]
    pub steady: u64,
    /// Datagrams each gossip inbox holds before the hub drops (as a full socket buffer).
    #[arg(long, default_value_t = REAL_INBOX)]
    pub inbox: usize,
    /// Give up waiting for full convergence after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub converge_timeout: u64,
    /// Give up waiting for one change to reach every node after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub change_timeout: u64,
    /// Where the stores go (default: a temporary directory in /dev/shm, else in $TMPDIR).
    #[arg(long)]
    pub store_root: Option<PathBuf>,
    /// Seed of the simulation's randomness (seeds, which nodes change).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// A node of the simulated fleet, as the observer sees it.
struct SimNode {
    id: String,
    name: String,
    store: Store,
    handle: PeerHandle,
    local_changed: Arc<Notify>,
    disks: Vec<DiskRecord>,
    /// Kept so that mount requests (none are made) would queue, as in the daemon.
    _mount_jobs: mpsc::Receiver<IncomingMount>,
}

/// Node `i`'s gossip address: 198.18.0.0/15, the benchmarking range, as the peer tests
/// use; nothing leaves the process.
pub(crate) fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::from((
        [
            198,
            18 + (i / 62_500) as u8,
            (i / 250 % 250) as u8,
            (i % 250 + 1) as u8,
        ],
        32004,
    ))
}

/// The multicast address a node's (silent) multicast transport joins as.
fn multicast_addr(i: usize) -> SocketAddr {
    SocketAddr::new(gossip_addr(i).ip(), 32003)
}

/// Disk `d` of node `p` (`scale`'s realistic records).
fn disk(p: usize, d: usize) -> DiskRecord {
    crate::scale::sim_disk(p, d)
}

/// The seeds node `i` is configured with: node 0 and up to two other earlier nodes.
fn seeds_for(i: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut seeds = Vec::new();
    if i == 0 {
        return seeds;
    }
    seeds.push(0);
    for _ in 0..2 {
        if i > 1 {
            let s = rng.gen_range(1..i);
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
    }
    seeds
}

fn config(i: usize, dir: &std::path::Path, seeds: &[usize]) -> Config {
    let mut argv: Vec<String> = vec![
        "--node-name".into(),
        format!("sim-{i:04}"),
        "--store".into(),
        dir.join("store").to_string_lossy().into_owned(),
        // Liveness is the failure detector's; a long expiry keeps "still live" writes out.
        "--peer-expiry".into(),
        "1h".into(),
        // Only the gossip switch reads the path; the keyring is built directly.
        "--key-file".into(),
        "/nonexistent/diskd-bench.key".into(),
        "--no-multicast".into(),
        "--gossip-advertise".into(),
        gossip_addr(i).to_string(),
    ];
    for s in seeds {
        argv.extend(["--seed".into(), gossip_addr(*s).to_string()]);
    }
    let args = DaemonArgs::parse_from(&argv).expect("the benchmark's flags parse");
    Config::load(None, None, &args).expect("config")
}

/// Run the simulation and return its figures (progress goes to stderr).
pub fn simulate(o: &GossipOptions) -> GossipFigures {
    let n = o.nodes.max(2);
    let d = o.disks.max(1);
    let mut fig = GossipFigures {
        nodes: n,
        disks: d,
        ramp: Duration::from_millis(o.ramp_ms),
        inbox: o.inbox,
        ..Default::default()
    };
    let root = o.store_root.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let tmp = tempfile::Builder::new()
        .prefix("diskd-bench-gossip-")
        .tempdir_in(&root)
        .expect("store root");
    let mut rng = StdRng::seed_from_u64(o.seed);
    let rss0 = rss_kib();

    // Stores first, each with its own inventory: opening 1,000 sleds is not part of what
    // the fleet does when it starts.
    eprintln!("gossip: opening {n} stores in {}", tmp.path().display());
    let mut prepared = Vec::with_capacity(n);
    for i in 0..n {
        let dir = tmp.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let seeds = seeds_for(i, &mut rng);
        let config = config(i, &dir, &seeds);
        let store = Store::open_sharing_process(&config.store).expect("store");
        let disks: Vec<DiskRecord> = (0..d).map(|k| disk(i, k)).collect();
        let name = config.node_name.clone();
        store
            .publish(
                Owner::Local,
                &name,
                None,
                &disks,
                diskd::model::now_millis(),
            )
            .into_result()
            .expect("local inventory");
        prepared.push((config, store, disks));
    }
    let rss_stores = rss_kib();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _in_runtime = rt.enter();
    let mcast = MemoryHub::new(16);
    let ghub = MemoryHub::new(o.inbox);
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let mut nodes: Vec<SimNode> = Vec::with_capacity(n);
    let mut complete_at: Vec<Option<Duration>> = vec![None; n];
    let mut members_at: Option<Duration> = None;
    let want = n * d;

    eprintln!("gossip: starting {n} nodes over {} ms", o.ramp_ms);
    let cpu0 = cpu();
    let t0 = Instant::now();
    let mut last_start = t0;
    let mut last_poll = t0;
    let poll = |nodes: &[SimNode], complete_at: &mut [Option<Duration>], now: Duration| {
        for (i, node) in nodes.iter().enumerate() {
            if complete_at[i].is_none() && node.store.sightings_len() >= want {
                complete_at[i] = Some(now);
            }
        }
    };
    for (i, (config, store, disks)) in prepared.into_iter().enumerate() {
        let due = t0 + Duration::from_millis(o.ramp_ms * i as u64 / n as u64);
        while Instant::now() < due {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(5)));
        }
        let node = NodeInfo::new(&config.node_name, store.node_id());
        let name = config.node_name.clone();
        let local_changed = Arc::new(Notify::new());
        let (mount_tx, mount_rx) = mpsc::channel(8);
        let mhub = mcast.clone();
        let handle = spawn_with(
            Deps {
                config: Arc::new(config),
                node: node.clone(),
                store: store.clone(),
                telemetry: Telemetry::default(),
                local_changed: local_changed.clone(),
                mount_jobs: mount_tx,
                shutdown: shutdown.child_token(),
            },
            &tracker,
            Keyring::from_keys(&[KEY]),
            Clock::system(),
            StdRng::seed_from_u64(o.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
            move |_| Ok(mhub.join(multicast_addr(i))),
            Some(GossipSetup {
                transport: ghub.join_unicast(gossip_addr(i)),
                advertise: gossip_addr(i),
            }),
        );
        nodes.push(SimNode {
            id: node.id,
            name,
            store,
            handle,
            local_changed,
            disks,
            _mount_jobs: mount_rx,
        });
        last_start = Instant::now();
        if last_poll.elapsed() >= Duration::from_millis(50) {
            last_poll = Instant::now();
            poll(&nodes, &mut complete_at[..nodes.len()], t0.elapsed());
        }
    }
    tracker.close();
    let started = last_start - t0;
    eprintln!("gossip: all started after {:.1} s", started.as_secs_f64());

    // Full convergence: every node holds every node's disks.
    let deadline = Duration::from_secs(o.converge_timeout);
    let mut last_report = Instant::now();
    let mut last_members = Instant::now();
    let mut last_cpu = cpu();
    loop {
        let now = t0.elapsed();
        poll(&nodes, &mut complete_at, now);
        // Status is published once a second: no need to read it every poll.
        if members_at.is_none() && last_members.elapsed() >= Duration::from_millis(250) {
            last_members = Instant::now();
            if members_complete(&nodes, n) {
                members_at = Some(now);
            }
        }
        let done = complete_at.iter().filter(|c| c.is_some()).count();
        if done == n || now > deadline {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let share = (cpu() - last_cpu).as_secs_f64() / last_report.elapsed().as_secs_f64();
            last_report = Instant::now();
            last_cpu = cpu();
            let known: usize = nodes.iter().map(|x| x.store.sightings_len()).sum();
            eprintln!(
                "gossip: {:.0} s: {done}/{n} nodes complete, {:.1} % of all sightings known, process CPU {:.0} % of a core",
                now.as_secs_f64(),
                known as f64 * 100.0 / (n * want) as f64,
                share * 100.0
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let conv_cpu = cpu() - cpu0;
    fig.nodes_complete = complete_at.iter().filter(|c| c.is_some()).count();
    if fig.nodes_complete == n {
        let all = complete_at
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or_default();
        fig.converged_after = Some(all);
        fig.converged_after_last_start = Some(all.saturating_sub(started));
    } else {
        // Who is missing what: the start of an explanation.
        let mut missing = 0usize;
        for x in &nodes {
            let have: std::collections::HashSet<String> = x
                .store
                .sightings()
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.node_id)
                .collect();
            missing += nodes.iter().filter(|y| !have.contains(&y.id)).count();
        }
        eprintln!(
            "gossip: NOT converged after {} s: {}/{n} nodes complete, {missing} (node, host) pairs missing",
            o.converge_timeout, fig.nodes_complete
        );
    }
    fig.converge_cpu = conv_cpu;
    // Nodes publish their gossip status once a second: let the last one appear.
    watch_members(&nodes, n, t0, &mut members_at, Duration::from_millis(1100));
    let at_conv = gossip_bytes(&nodes);
    fig.converge_bytes_out_per_node = at_conv.iter().map(|b| b.1 as f64).sum::<f64>() / n as f64;
    fig.rss_kib[0] = rss0;
    fig.rss_kib[1] = rss_stores;
    fig.rss_kib[2] = rss_kib();
    eprintln!(
        "gossip: converged after {:?}; settling {} s, then {} s of steady state",
        fig.converged_after, o.settle, o.steady
    );

    // Steady state: nothing changes; what membership alone costs.
    watch_members(
        &nodes,
        n,
        t0,
        &mut members_at,
        Duration::from_secs(o.settle),
    );
    let (b0, c0, w0) = (gossip_bytes(&nodes), cpu(), Instant::now());
    watch_members(
        &nodes,
        n,
        t0,
        &mut members_at,
        Duration::from_secs(o.steady),
    );
    let (b1, c1, secs) = (gossip_bytes(&nodes), cpu(), w0.elapsed().as_secs_f64());
    // The log holds the last 16,384 datagrams: the end of the window, at large fleets.
    fig.steady_mix = traffic_mix(
        &ghub,
        tokio::time::Instant::now() - Duration::from_secs(o.steady),
    );
    fig.steady_mix_from = ghub
        .sent()
        .first()
        .map(|s| s.at.elapsed().as_secs_f64().min(secs))
        .unwrap_or(0.0);
    fig.members_after = members_at;
    fig.members_live = members_live(&nodes);
    fig.members_missing = nodes
        .iter()
        .map(|x| {
            let live = x.handle.status().gossip().map_or(0, |g| g.members_live);
            (n - 1).saturating_sub(live)
        })
        .collect();
    let per: Vec<(f64, f64)> = b0
        .iter()
        .zip(&b1)
        .map(|(a, b)| {
            let inn = b.0.saturating_sub(a.0) as f64 / secs;
            let out = b.1.saturating_sub(a.1) as f64 / secs;
            (inn + out, out)
        })
        .collect();
    fig.steady = Traffic {
        secs,
        mean_bps: per.iter().map(|p| p.0).sum::<f64>() / n as f64,
        max_bps: per.iter().map(|p| p.0).fold(0.0, f64::max),
        mean_out_bps: per.iter().map(|p| p.1).sum::<f64>() / n as f64,
        max_out_bps: per.iter().map(|p| p.1).fold(0.0, f64::max),
        cpu_share: (c1 - c0).as_secs_f64() / secs,
    };

    // Changes: one node swaps a disk for a new one; how long until the others have it.
    let timeout = Duration::from_secs(o.change_timeout);
    let others = n - 1;
    let need99 = (others as f64 * 0.99).ceil() as usize;
    for k in 0..o.changes {
        let who = rng.gen_range(0..n);
        let node = &mut nodes[who];
        let mut fresh = disk(who, 0);
        let uuid = format!("{k:08x}-c4a9-4e4a-af6a-{who:012x}");
        fresh.uuid = Some(uuid.clone());
        fresh.device = format!("/dev/disk/by-id/wwn-change-{k}-part1");
        fresh.label = Some(format!("change {k}"));
        node.disks[0] = fresh;
        let start = Instant::now();
        node.store
            .publish(
                Owner::Local,
                &node.name,
                None,
                &node.disks,
                diskd::model::now_millis(),
            )
            .into_result()
            .expect("publish");
        node.local_changed.notify_one();
        let mut have = vec![false; n];
        have[who] = true;
        let (mut reached, mut t99, mut tall) = (0usize, None, None);
        while start.elapsed() < timeout {
            let now = start.elapsed();
            for (i, x) in nodes.iter().enumerate() {
                if !have[i] && has_present(&x.store, &uuid) {
                    have[i] = true;
                    reached += 1;
                }
            }
            if t99.is_none() && reached >= need99 {
                t99 = Some(now);
            }
            if reached == others {
                tall = Some(now);
                break;
            }
            // 10 ms: finer polling of 1,000 stores would cost the fleet a tenth of a core.
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "gossip: change {k} on node {who}: 99 % after {:?}, all after {:?} ({reached}/{others})",
            t99, tall
        );
        fig.changes.push(ChangeTiming {
            node: who,
            p99_nodes: t99,
            all_nodes: tall,
            reached,
        });
        // Let the push burst drain before the next change.
        std::thread::sleep(Duration::from_millis(500));
    }
    fig.rss_kib[3] = rss_kib();
    fig.hwm_kib = status_kib("VmHWM:");
    fig.hub_log_bytes = ghub.sent().iter().map(|s| s.bytes.len() as u64).sum();
    fig.store_bytes_per_node = nodes
        .iter()
        .map(|x| x.store.size_on_disk() as f64)
        .sum::<f64>()
        / n as f64;
    fig.sightings_per_node = nodes[0].store.sightings_len();
    fig.dropped_full = ghub.dropped_full();
    fig.dropped_rule = ghub.dropped_by_rule();
    fig.multicast_sent = mcast.sent().len();
    fig.loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");

    // A clean stop (as the daemon's: goodbyes, foca's leave) with a deadline: a runtime
    // shut down under layers that are inside `block_in_place` (store writes) panics them
    // when they next touch a timer.
    drop(_in_runtime);
    shutdown.cancel();
    let stopped = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), tracker.wait())
            .await
            .is_ok()
    });
    if !stopped {
        eprintln!("gossip: some layers had not stopped after 30 s");
    }
    rt.shutdown_background();
    drop(nodes);
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(nodes: usize, disks: usize) -> GossipOptions {
        GossipOptions {
            nodes,
            disks,
            ramp_ms: 5000,
            changes: 20,
            settle: 10,
            steady: 30,
            inbox: REAL_INBOX,
            converge_timeout: 300,
            change_timeout: 60,
            store_root: None,
            seed: 1,
            json: false,
        }
    }

    /// The CLI's simulation at a size CI affords: the fleet converges and a change reaches
    /// every node (no speed is asserted: CI machines vary and run other tests alongside).
    #[test]
    fn a_small_gossip_fleet_converges_and_spreads_changes() {
        let o = GossipOptions {
            ramp_ms: 1000,
            changes: 3,
            settle: 0,
            steady: 2,
            converge_timeout: 120,
            change_timeout: 60,
            ..sized(30, 4)
        };
        let f = simulate(&o);
        assert!(
            f.converged(),
            "not converged: {}/{} nodes complete",
            f.nodes_complete,
            f.nodes
        );
        assert_eq!(f.sightings_per_node, 30 * 4 + 3, "{f:?}");
        assert_eq!(f.changes.len(), 3);
        assert!(f.changes_reached_all(), "{:?}", f.changes);
        assert_eq!(f.multicast_sent, 0, "multicast is off");
        assert_eq!(f.dropped_rule, 0);
    }
}
