//! `diskd-bench`: the figures in BENCHMARKS.md, reproducible with one command each.
//!
//! `wire` measures encodings offline; `convergence` builds a two-host network-namespace lab
//! (root needed) and times how long a disk that appears on host A takes to be found by a
//! query on host B. `gossip` runs a whole fleet of peer layers in this one process, joined
//! by unicast gossip over an in-memory network (no root).
#![forbid(unsafe_code)]

mod client;
mod devices;
mod gossip;
mod latency;
mod members;
mod scale;
mod sim;
mod smart;
mod store;

use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use diskd::client::Session;
use diskd::model::DiskRecord;
use diskd::peer::wire::{self, Body, Envelope};
use diskd::protocol::frame::Status;
use diskd_lab::{disk_line, Lab};

/// Benchmarks of diskd.
#[derive(Parser)]
#[command(name = "diskd-bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bytes per disk record and datagrams per announce, native format vs YAML and JSON.
    Wire,
    /// Time from a disk appearing in A's inventory to `where` on B finding it (needs root).
    Convergence {
        /// How many disks to add, one after the other.
        #[arg(long, default_value_t = 100)]
        trials: usize,
    },
    /// A real loop device attached (and then mounted) on host A: time until `where` on
    /// host B shows it (needs root).
    Devices {
        /// Attach/mount cycles.
        #[arg(long, default_value_t = 100)]
        trials: usize,
    },
    /// The automation issue's budget, measured from outside (needs root): the clock starts
    /// before `losetup` runs on host A and stops when a separate, already running process
    /// on host B sees the disk; every step in between is timed from the daemons' logs.
    Latency(latency::LatencyOptions),
    /// The observer process of `latency` (run by it; polls B's daemon).
    #[command(hide = true)]
    LatencyPoll {
        #[arg(long)]
        socket: std::path::PathBuf,
        #[arg(long)]
        uuid: String,
        #[arg(long)]
        poll_us: u64,
        #[arg(long)]
        session: bool,
    },
    /// 1,000 simulated peers x 64 disks against one daemon (needs root): CPU, memory,
    /// ingest, query latency during waves, store size and writes, restart time. The peers
    /// announce by multicast, or with `--gossip` are gossip members of the daemon.
    Scale(scale::SimOptions),
    /// The store alone (no root, no lab): write a PEERS x DISKS store through the public
    /// API, then time reopening it, each open in a fresh process.
    Store(store::StoreOptions),
    /// A gossip fleet in one process in real time (no root): NODES peer layers, each with
    /// its own sled store, over an in-memory network that still seals every packet; times
    /// convergence and change propagation, gossip bytes per node, memory per node. Past a
    /// few hundred nodes it measures this machine: `sim` measures the protocol.
    Gossip(gossip::GossipOptions),
    /// A gossip fleet in virtual time (no root): NODES real peer layers with in-memory
    /// stores on one thread under a paused clock, over a simulated network with latency,
    /// loss, a partition, crashes, late joiners and restarts; one seed, one run (the
    /// printed trace digest repeats).
    Sim(sim::SimOptions),
    /// A one-shot `diskd query` from exec to exit, beside `/bin/true` and `diskd
    /// --version` (no root).
    Client(client::ClientOptions),
    /// One SMART pass on a simulated host with 60 disks (no root): fake sysfs, fake
    /// smartctl with a per-disk delay, the real daemon; pass time, CPU (own and
    /// smartctl's), memory, and `where` latency during the pass against idle.
    Smart(smart::SmartOptions),
    /// Every benchmark above in turn, with their default sizes (needs root).
    All,
    /// The simulator itself (run by `scale` inside a lab namespace).
    #[command(hide = true)]
    Simulate(scale::SimOptions),
    /// One timed open (run by `store` in a fresh process).
    #[command(hide = true)]
    StoreOpen {
        dir: std::path::PathBuf,
        uuid: String,
        sightings: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Wire => wire_figures(),
        Cmd::Convergence { trials } => convergence(trials),
        Cmd::Devices { trials } => {
            require_root("devices");
            devices::devices(trials)
        }
        Cmd::Latency(o) => {
            require_root("latency");
            latency::latency(&o)
        }
        Cmd::LatencyPoll {
            socket,
            uuid,
            poll_us,
            session,
        } => latency::poll(&socket, &uuid, poll_us, session),
        Cmd::Scale(o) => {
            require_root("scale");
            scale::scale(&o)
        }
        Cmd::Simulate(o) => scale::simulate(&o),
        Cmd::Store(o) => store::store(&o),
        Cmd::Gossip(o) => gossip::gossip(&o),
        Cmd::Sim(o) => sim::sim(&o),
        Cmd::Client(o) => client::client(&o),
        Cmd::Smart(o) => {
            if let Err(e) = smart::smart(&o) {
                eprintln!("\ndiskd-bench smart: {e}");
                std::process::exit(1);
            }
        }
        Cmd::StoreOpen {
            dir,
            uuid,
            sightings,
        } => store::store_open(&dir, &uuid, sightings),
        Cmd::All => {
            require_root("all");
            println!("# diskd-bench all\n\n## Wire\n");
            wire_figures();
            println!();
            store::store(&store::StoreOptions {
                peers: 4000,
                disks: 16,
                opens: 5,
                dir: None,
            });
            println!("\n## Convergence\n");
            convergence(100);
            println!("\n## Devices\n");
            devices::devices(100);
            println!("\n## Latency budget");
            latency::latency(&latency::default_options());
            println!();
            scale::scale(&scale::SimOptions {
                peers: 1000,
                disks: 64,
                waves: 6,
                interval: 5,
                churn: 0.02,
                rate: 20_000,
                gossip: false,
                settle: 0,
                daemon: None,
                key: None,
                bind: None,
            });
        }
    }
}

/// A realistic disk: a 36-character UUID, a by-id device path, a label with spaces and
/// non-ASCII, one mountpoint.
fn disk(i: usize) -> DiskRecord {
    DiskRecord {
        probe: Default::default(),
        uuid: Some(format!("{i:08x}-83a0-4e4a-af6a-f578ca7a1f65")),
        label: Some(format!("backup volume {i} — Ürlaub")),
        device: format!("/dev/disk/by-id/ata-ST4000DM004-2CV104_ZFN{i:05}-part1"),
        fstype: Some("ext4".into()),
        mountpoints: vec![format!("/srv/backup/{i}")],
        hardware: Default::default(),
        health: None,
        fs: None,
    }
}

/// [`disk`] with the hardware sysfs reports for a SATA disk's partition's parent: a model,
/// a vendor, a serial, a WWN, the size.
fn disk_with_hardware(i: usize) -> DiskRecord {
    DiskRecord {
        hardware: diskd::model::Hardware {
            size: Some(4_000_787_030_016),
            model: Some("ST4000DM004-2CV104".into()),
            vendor: Some("ATA".into()),
            serial: Some(format!("ZFN{i:05}")),
            wwn: Some(format!("naa.5000c500{i:08x}")),
            transport: Some("sata".into()),
            removable: Some(false),
            rotational: Some(true),
            parent: None,
            backing_file: None,
        },
        ..disk(i)
    }
}

fn wire_figures() {
    let template = Envelope {
        node_id: "0123456789abcdef0123456789abcdef".into(),
        node: "node-a.example.org".into(),
        boot: u64::MAX / 3,
        seq: 12345,
        sent_ms: 1_790_000_000_000,
        body: Body::Ping,
    };
    println!("| disks | format | bytes | bytes/disk | datagrams (max 1400 B) |");
    println!("|---:|---|---:|---:|---:|");
    // The datagrams an inventory goes out in: their number and total bytes.
    let sent = |disks: &[DiskRecord]| -> (usize, usize) {
        let chunks = wire::chunk_inventory(&template, 1, disks, 1400);
        let datagrams = chunks.len();
        let bytes = chunks
            .into_iter()
            .map(|c| {
                wire::encode(&Envelope {
                    body: Body::Inventory(c),
                    ..template.clone()
                })
                .len()
            })
            .sum();
        (datagrams, bytes)
    };
    for n in [1usize, 64, 1000] {
        let disks: Vec<DiskRecord> = (0..n).map(disk).collect();
        let (datagrams, bytes) = sent(&disks);
        println!(
            "| {n} | native (postcard, with headers) | {bytes} | {:.1} | {datagrams} |",
            bytes as f64 / n as f64
        );
        // The same disks with everything sysfs can say (wire revision 2's trailer).
        let with_hw: Vec<DiskRecord> = (0..n).map(disk_with_hardware).collect();
        let (hw_datagrams, hw_bytes) = sent(&with_hw);
        println!(
            "| {n} | native, with hardware | {hw_bytes} | {:.1} | {hw_datagrams} |",
            hw_bytes as f64 / n as f64
        );
        // The text formats of the same records, hardware included.
        let yaml = serde_yaml::to_string(&with_hw)
            .map(|s| s.len())
            .unwrap_or(0);
        println!(
            "| {n} | YAML payload only, with hardware | {yaml} | {:.1} | - |",
            yaml as f64 / n as f64
        );
        let json = serde_json::to_string(&with_hw)
            .map(|s| s.len())
            .unwrap_or(0);
        println!(
            "| {n} | JSON payload only, with hardware | {json} | {:.1} | - |",
            json as f64 / n as f64
        );
    }
}

fn query_until_found(session: &mut Session, uuid: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        match session.call(&format!("where {uuid}")) {
            Ok(r) if matches!(r.status, Status::Ok(_)) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) => panic!("query failed: {e}"),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn require_root(what: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("diskd-bench {what} needs root (it builds network namespaces)");
        std::process::exit(2);
    }
}

fn convergence(trials: usize) {
    require_root("convergence");
    // Long intervals: only the change-triggered announce can explain what B sees.
    let mut lab = Lab::new(
        2,
        &["--announce-interval", "600s", "--disk-interval", "600s"],
    );
    lab.start_all();
    let a_sock = lab.host("a").socket();
    let b_sock = lab.host("b").socket();
    let mut a = connect(&a_sock);
    let mut b = connect(&b_sock);
    let mut lines = String::new();
    let mut samples = Vec::with_capacity(trials);
    for i in 0..trials {
        let uuid = format!("{i:08x}-0000-4000-8000-c0ffee000000");
        lines.push_str(&disk_line(
            &format!("/dev/loop{i}"),
            &uuid,
            &format!("trial {i}"),
        ));
        lab.host("a").set_disks(&lines);
        // The clock starts before the scan that puts the disk into A's inventory.
        let start = Instant::now();
        let r = a.call("refresh").expect("refresh on a");
        assert!(matches!(r.status, Status::Ok(_)), "refresh failed: {r:?}");
        if query_until_found(&mut b, &uuid, Duration::from_secs(10)).is_none() {
            panic!("trial {i}: b never found {uuid}");
        }
        samples.push(start.elapsed());
        eprint!("\rtrial {}/{trials}", i + 1);
    }
    eprintln!();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "convergence over {trials} trials: p50 {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

fn connect(sock: &Path) -> Session {
    Session::connect(sock).unwrap_or_else(|e| panic!("{e}"))
}
