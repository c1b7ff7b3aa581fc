//! `diskd-bench store`: the store alone, without a daemon or a lab (no root needed).
//!
//! Builds a fleet-sized store (PEERS hosts x DISKS disks) through the public API the peer
//! layer uses (`publish` and `upsert_peer`, then `flush`), closes it, and times `Store::open`
//! of it several times, a first query after open, an unchanged second pass and a pass with
//! one changed disk per host. Prints the figures as a Markdown table.

use std::time::{Duration, Instant};

use diskd::model::DiskRecord;
use diskd::store::{Owner, Store};

/// Options of `diskd-bench store`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreOptions {
    /// Hosts in the store.
    #[arg(long, default_value_t = 4000)]
    pub peers: usize,
    /// Disks per host.
    #[arg(long, default_value_t = 16)]
    pub disks: usize,
    /// How many times the store is reopened (each timed).
    #[arg(long, default_value_t = 5)]
    pub opens: usize,
    /// Keep the store in this directory (it must not exist yet) instead of a temporary one.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

fn peer_id(p: usize) -> String {
    format!("{p:032x}")
}

/// This process's resident memory (VmRSS), KiB.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far.
pub(crate) fn cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pass over every host: `inventory(p)` is host p's inventory. Returns wall and CPU
/// time, flush included.
fn pass(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    peers: usize,
    now: u64,
    inventory: impl Fn(usize) -> Vec<DiskRecord>,
) -> (Duration, Duration) {
    let inventories: Vec<Vec<DiskRecord>> = (0..peers).map(inventory).collect();
    let (t, c) = (Instant::now(), cpu());
    for (p, disks) in inventories.iter().enumerate() {
        store
            .publish(
                Owner::Peer(&peer_id(p)),
                &format!("sim-{p:04}"),
                Some("192.0.2.3"),
                disks,
                now,
            )
            .into_result()
            .expect("publish");
        // The peer layer keeps a record of every peer it hears beside its inventory.
        store
            .upsert_peer(&diskd::model::PeerRecord {
                node_id: peer_id(p),
                node: format!("sim-{p:04}"),
                addr: Some("192.0.2.3".into()),
                first_seen: 1,
                last_seen: now,
                gone: false,
                legacy: false,
                disks: disks.len(),
                key: None,
                boot: 1,
                sent_ms: now,
            })
            .expect("upsert_peer");
        // The peer layer flushes once per burst of datagrams (up to 64 of them).
        if p % 64 == 63 {
            rt.block_on(store.flush()).expect("flush");
        }
    }
    rt.block_on(store.flush()).expect("flush");
    (t.elapsed(), cpu() - c)
}

/// Run the store benchmark and print the figures.
pub fn store(o: &StoreOptions) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = o.dir.clone().unwrap_or_else(|| tmp.path().join("store"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let records = (o.peers * o.disks) as f64;
    let rss0 = rss_kib();
    let store = Store::open(&dir).expect("open");
    let (first_wall, first_cpu) = pass(&store, &rt, o.peers, 1, |p| {
        (0..o.disks).map(|d| crate::scale::sim_disk(p, d)).collect()
    });
    let rss_written = rss_kib();
    let (same_wall, same_cpu) = pass(&store, &rt, o.peers, 2, |p| {
        (0..o.disks).map(|d| crate::scale::sim_disk(p, d)).collect()
    });
    // One disk per host changes its device (a new stay; every host is rewritten).
    let (churn_wall, churn_cpu) = pass(&store, &rt, o.peers, 3, |p| {
        let mut v: Vec<DiskRecord> = (0..o.disks).map(|d| crate::scale::sim_disk(p, d)).collect();
        if let Some(d) = v.first_mut() {
            d.device.push_str("-moved");
        }
        v
    });
    let size = store.size_on_disk();
    let sightings = store.sightings_len();
    drop(store);

    // Each open in a fresh process, as a restart is: its time, and the memory it takes.
    let exe = std::env::current_exe().expect("exe");
    let mut opens = Vec::new();
    let mut firsts = Vec::new();
    let mut rss_open = Vec::new();
    for _ in 0..o.opens.max(1) {
        let out = std::process::Command::new(&exe)
            .arg("store-open")
            .arg(&dir)
            .arg(
                crate::scale::sim_disk(o.peers / 2, 1)
                    .uuid
                    .unwrap_or_default(),
            )
            .arg(sightings.to_string())
            .output()
            .expect("store-open");
        assert!(
            out.status.success(),
            "store-open failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(f.len(), 3, "store-open said {text:?}");
        opens.push(Duration::from_secs_f64(f[0] / 1000.0));
        firsts.push(Duration::from_secs_f64(f[1] / 1000.0));
        rss_open.push(f[2] as u64);
    }
    opens.sort();
    firsts.sort();

    println!(
        "## Store: {} hosts x {} disks ({} sightings)",
        o.peers, o.disks, sightings
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    let rate = |c: Duration| records / c.as_secs_f64().max(0.001);
    println!(
        "| write every host (all records new), flush per 64 hosts | {:.0} ms wall, {:.0} ms CPU ({:.0} records per CPU s) |",
        ms(first_wall),
        ms(first_cpu),
        rate(first_cpu)
    );
    println!(
        "| same inventories again (nothing to write) | {:.0} ms wall, {:.0} ms CPU |",
        ms(same_wall),
        ms(same_cpu)
    );
    println!(
        "| one disk per host moved (every host rewritten) | {:.0} ms wall, {:.0} ms CPU |",
        ms(churn_wall),
        ms(churn_cpu)
    );
    println!("| store on disk | {:.1} MB |", size as f64 / 1_048_576.0);
    rss_open.sort();
    println!(
        "| RSS grown while writing the store / by an open in a fresh process | {:.1} MB / {:.1} MB |",
        rss_written.saturating_sub(rss0) as f64 / 1024.0,
        rss_open[rss_open.len() / 2] as f64 / 1024.0
    );
    println!(
        "| `Store::open` min / median / max of {} | {:.1} / {:.1} / {:.1} ms |",
        opens.len(),
        ms(opens[0]),
        ms(opens[opens.len() / 2]),
        ms(opens[opens.len() - 1])
    );
    println!(
        "| open to first `find` answer, median | {:.1} ms |",
        ms(firsts[firsts.len() / 2])
    );
}

/// `diskd-bench store-open DIR UUID SIGHTINGS`: open the store, find UUID, print the open
/// time, the time to the answer (ms) and the RSS the open added (KiB).
pub fn store_open(dir: &std::path::Path, uuid: &str, sightings: usize) {
    let r0 = rss_kib();
    let t = Instant::now();
    let s = Store::open(dir).expect("open");
    let open = t.elapsed();
    let found = s.find(uuid).expect("find").len();
    let first = t.elapsed();
    assert_eq!(found, 1, "{uuid} not found after open");
    assert_eq!(s.sightings_len(), sightings);
    println!(
        "{:.3} {:.3} {}",
        ms(open),
        ms(first),
        rss_kib().saturating_sub(r0)
    );
}
