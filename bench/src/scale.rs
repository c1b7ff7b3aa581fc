//! `diskd-bench scale` and its helper `simulate`: 1,000 simulated peers with 64 disks each
//! against one real daemon in a lab namespace, announcing in waves with churn; by
//! multicast, or with `--gossip` as gossip members of the daemon (see `members`).
//!
//! The simulator runs as a child process inside the second lab namespace (so its datagrams
//! travel the lab link like real ones); this process measures the daemon under test from
//! outside: CPU and memory from /proc, query latency over its control socket, ingest from
//! its counters, store size and write volume, and the restart time.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diskd::client::Session;
use diskd::model::DiskRecord;
use diskd::peer::wire::{self, Body, Envelope};
use diskd::protocol::frame::Status;
use diskd_lab::{disk_line, Lab};
use rand::{Rng, SeedableRng};

/// Options shared by `scale` and `simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimOptions {
    /// Simulated peers.
    #[arg(long, default_value_t = 1000)]
    pub peers: usize,
    /// Disks per peer.
    #[arg(long, default_value_t = 64)]
    pub disks: usize,
    /// Announce waves.
    #[arg(long, default_value_t = 5)]
    pub waves: usize,
    /// Seconds between waves.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Fraction of peers that move a disk to another peer each wave; as many peers leave
    /// (goodbye) for one wave and return with the next.
    #[arg(long, default_value_t = 0.02)]
    pub churn: f64,
    /// Datagrams per second the simulator sends at most.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// The simulated hosts are gossip members of the daemon (sealed unicast, SWIM: they
    /// join, answer probes and pulls, and send an inventory only when it changes) instead
    /// of multicast announcers.
    #[arg(long)]
    pub gossip: bool,
    /// With `--gossip`: idle CPU is measured right after the waves and again this many
    /// seconds later, when foca has sent every member's join its allotted number of
    /// times (at 10,000 members: 10,000 updates x 24 sends, 30 per packet, at about 20
    /// packets a second).
    #[arg(long, default_value_t = 420)]
    pub settle: u64,
    /// With `--gossip`, for the simulator: the daemon's gossip address.
    #[arg(long, hide = true)]
    pub daemon: Option<SocketAddr>,
    /// With `--gossip`, for the simulator: the fleet key file.
    #[arg(long, hide = true)]
    pub key: Option<std::path::PathBuf>,
    /// With `--gossip`, for the simulator: the address its members listen on.
    #[arg(long, hide = true)]
    pub bind: Option<std::net::IpAddr>,
}

/// The node id of simulated host `p`.
pub(crate) fn peer_id(p: usize) -> String {
    format!("{:032x}", 0x5151_0000_0000u64 + p as u64)
}

/// Disk `d` of simulated host `p` (also what `diskd-bench store` writes), with the hardware a
/// real partition carries, as the daemon's defaults report it.
pub fn sim_disk(p: usize, d: usize) -> DiskRecord {
    DiskRecord {
        probe: Default::default(),
        uuid: Some(format!("{p:04x}{d:04x}-83a0-4e4a-af6a-f578ca7a1f65")),
        label: Some(format!("vol {d} of sim host {p}")),
        device: format!("/dev/disk/by-id/wwn-0x5000c500{p:04x}{d:04x}-part1"),
        fstype: Some("ext4".into()),
        mountpoints: if d % 4 == 0 {
            vec![format!("/srv/data/{d}")]
        } else {
            vec![]
        },
        // What the hardware watcher (on by default) reports for a partition of a SATA
        // disk: its size and how the disk is attached; the identity (model, serial, WWN)
        // belongs to the whole disk's record.
        hardware: diskd::model::Hardware {
            size: Some(4_000_785_964_544 / 4),
            transport: Some("sata".into()),
            removable: Some(false),
            rotational: Some(true),
            parent: Some(format!("/dev/sd{}", (b'a' + (d % 26) as u8) as char)),
            ..Default::default()
        },
        health: None,
        fs: None,
    }
}

/// The simulator: runs inside the lab namespace, prints `wave N DATAGRAMS RECORDS` as each
/// wave is sent.
pub fn simulate(o: &SimOptions) {
    if o.gossip {
        return crate::members::simulate(o);
    }
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_multicast_ttl_v4(1).expect("ttl");
    let group: SocketAddr = "230.1.2.3:32003".parse().expect("group");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut inventories: Vec<Vec<DiskRecord>> = (0..o.peers)
        .map(|p| (0..o.disks).map(|d| sim_disk(p, d)).collect())
        .collect();
    let mut seqs = vec![0u64; o.peers];
    let boots: Vec<u64> = (0..o.peers).map(|_| rng.gen()).collect();
    let gap = Duration::from_secs_f64(1.0 / o.rate as f64);
    for wave in 0..o.waves {
        let start = Instant::now();
        if wave > 0 {
            // Churn: some disks move from one peer to another.
            let moves = ((o.peers as f64) * o.churn).ceil() as usize;
            for _ in 0..moves {
                let from = rng.gen_range(0..o.peers);
                let to = rng.gen_range(0..o.peers);
                if from != to && !inventories[from].is_empty() {
                    let d = inventories[from].remove(0);
                    inventories[to].push(d);
                }
            }
        }
        // Churn: some peers leave this wave (a goodbye instead of an announce) and come
        // back with the next one.
        let leaving: std::collections::HashSet<usize> = if wave > 0 {
            (0..((o.peers as f64) * o.churn).ceil() as usize)
                .map(|_| rng.gen_range(0..o.peers))
                .collect()
        } else {
            Default::default()
        };
        let mut datagrams = 0u64;
        let mut records = 0u64;
        let mut next = Instant::now();
        for p in 0..o.peers {
            let template = Envelope {
                node_id: peer_id(p),
                node: format!("sim-{p:04}"),
                boot: boots[p],
                seq: 0,
                sent_ms: diskd::model::now_millis(),
                body: Body::Ping,
            };
            if leaving.contains(&p) {
                seqs[p] += 1;
                let bye = Envelope {
                    seq: seqs[p],
                    body: Body::Goodbye,
                    ..template.clone()
                };
                let _ = sock.send_to(&wire::encode(&bye), group);
                datagrams += 1;
                continue;
            }
            for chunk in wire::chunk_inventory(&template, wave as u64 + 1, &inventories[p], 1400) {
                seqs[p] += 1;
                records += chunk.disks.len() as u64;
                let env = Envelope {
                    seq: seqs[p],
                    body: Body::Inventory(chunk),
                    ..template.clone()
                };
                let bytes = wire::encode(&env);
                let _ = sock.send_to(&bytes, group);
                datagrams += 1;
                next += gap;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        }
        println!(
            "wave {wave} {datagrams} {records} {}",
            start.elapsed().as_millis()
        );
        let elapsed = start.elapsed();
        let period = Duration::from_secs(o.interval);
        if wave + 1 < o.waves && elapsed < period {
            std::thread::sleep(period - elapsed);
        }
    }
}

fn proc_stat_cpu(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A `VmRSS:`-style line of `/proc/PID/status`, in KiB (0 when unreadable).
pub(crate) fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proc_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn timed(session: &mut Session, line: &str) -> (Duration, bool) {
    let t = Instant::now();
    let ok = matches!(session.call(line).map(|r| r.status), Ok(Status::Ok(_)));
    (t.elapsed(), ok)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Run the whole scale benchmark and print the figures.
pub fn scale(o: &SimOptions) {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("fleet.key");
    let mut args = vec!["--announce-interval", "60s", "--peer-expiry", "600s"];
    if o.gossip {
        diskd::peer::keys::write_new_key(&key).expect("fleet key");
        let key = key.to_str().expect("utf-8 path");
        args.extend(["--key-file", key, "--interface", "eth0", "--no-multicast"]);
    }
    let mut lab = Lab::new(2, &args);
    let local: String = (0..64)
        .map(|d| {
            disk_line(
                &format!("/dev/sd{d}"),
                &format!("{d:08x}-aaaa-4bbb-8ccc-dddddddddddd"),
                &format!("local {d}"),
            )
        })
        .collect();
    lab.host("a").set_disks(&local);
    // The daemon's default log level. At the lab's `diskd=debug` it also logs a line per
    // disk event (64,000 at a first contact of 4,000 x 16), which doubled its CPU there.
    lab.host("a").log_filter = "info".into();
    lab.host("a").start();
    let pid = lab.host("a").pid().expect("daemon pid");
    let sock = lab.host("a").socket();
    let store_dir = lab.host("a").dir.join("store");
    let mut session = Session::connect(&sock).expect("connect");
    std::thread::sleep(Duration::from_secs(2));
    // Idle CPU before any peer exists.
    let c0 = proc_stat_cpu(pid);
    std::thread::sleep(Duration::from_secs(5));
    let idle_empty = (proc_stat_cpu(pid) - c0).as_secs_f64() / 5.0 * 100.0;

    let exe = std::env::current_exe().expect("exe");
    let ns = lab.hosts[1].ns.clone();
    let mut sim = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&exe)
            .args([
                "simulate",
                "--peers",
                &o.peers.to_string(),
                "--disks",
                &o.disks.to_string(),
                "--waves",
                &o.waves.to_string(),
                "--interval",
                &o.interval.to_string(),
                "--churn",
                &o.churn.to_string(),
                "--rate",
                &o.rate.to_string(),
            ])
            .args(if o.gossip {
                vec![
                    "--gossip".to_string(),
                    "--daemon".into(),
                    format!("{}:32004", lab.hosts[0].addr),
                    "--key".into(),
                    key.display().to_string(),
                    "--bind".into(),
                    lab.hosts[1].addr.clone(),
                ]
            } else {
                vec![]
            })
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulator"),
    );
    let lines = BufReader::new(sim.0.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in lines.lines().map_while(Result::ok) {
            if l.starts_with("wave ") {
                let _ = tx.send(l);
            }
        }
    });
    let w0 = proc_write_bytes(pid);
    let cpu_waves0 = proc_stat_cpu(pid);
    let t_waves0 = Instant::now();
    let mut query_lat = Vec::new();
    let mut list_lat = Vec::new();
    let mut failures = 0;
    let mut wave_reports = Vec::new();
    let mut done_waves = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // First half of the waves: nothing else runs, so the daemon's CPU time is the ingest
    // cost. Second half: queries run while the waves arrive.
    let quiet_waves = (o.waves / 2).max(2).min(o.waves);
    // Daemon CPU time when each wave's last datagram was sent: with waves seconds apart,
    // wave k is processed between snapshot k and k+1.
    let mut cpu_at_wave: Vec<Duration> = Vec::new();
    let mut wave_records: Vec<u64> = Vec::new();
    while done_waves < o.waves {
        while let Ok(l) = rx.try_recv() {
            let cpu = proc_stat_cpu(pid) - cpu_waves0;
            eprintln!(
                "simulator: {l}; daemon cpu so far {:.2} s, written {:.1} MB, store {:.1} MB",
                cpu.as_secs_f64(),
                (proc_write_bytes(pid) - w0) as f64 / 1_048_576.0,
                dir_size(&store_dir) as f64 / 1_048_576.0
            );
            cpu_at_wave.push(cpu);
            wave_records.push(
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0),
            );
            wave_reports.push(l);
            done_waves += 1;
        }
        if done_waves < quiet_waves {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let p = rng.gen_range(0..o.peers);
        let d = rng.gen_range(1..o.disks);
        let (t, ok) = timed(
            &mut session,
            &format!("where {:04x}{:04x}-83a0-4e4a-af6a-f578ca7a1f65", p, d),
        );
        query_lat.push(t);
        let (t2, ok2) = timed(&mut session, &format!("list sim-{p:04}"));
        list_lat.push(t2);
        if !(ok && ok2) {
            failures += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !o.gossip {
        let _ = sim.0.wait();
    }
    // Let the daemon finish what is queued.
    std::thread::sleep(Duration::from_secs(2));
    let wave_wall = t_waves0.elapsed();
    let wave_cpu = proc_stat_cpu(pid) - cpu_waves0;
    let written = proc_write_bytes(pid) - w0;
    let st = lab.host("a").status();
    let received = st["counters"]["packets_received"].as_u64().unwrap_or(0);
    let total_records: u64 = wave_reports
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    let total_datagrams: u64 = wave_reports
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    let rss = proc_status_kib(pid, "VmRSS:");
    let hwm = proc_status_kib(pid, "VmHWM:");
    // Idle after the waves, with the full fleet known, over 10 s; with gossip also after
    // `--settle`, as foca piggybacks every join on its packets for minutes.
    let idle_for_10s = || {
        let c1 = proc_stat_cpu(pid);
        std::thread::sleep(Duration::from_secs(10));
        (proc_stat_cpu(pid) - c1).as_secs_f64() / 10.0 * 100.0
    };
    let mut idle = vec![idle_for_10s()];
    let mut rss_settled = None;
    if o.gossip {
        eprintln!("waiting {} s for foca's dissemination to end", o.settle);
        std::thread::sleep(Duration::from_secs(o.settle));
        idle.push(idle_for_10s());
        rss_settled = Some(proc_status_kib(pid, "VmRSS:"));
    }
    let idle_full = idle
        .iter()
        .map(|v| format!("{v:.2} %"))
        .collect::<Vec<_>>()
        .join(&format!(", {} s later ", o.settle));
    let store_bytes = dir_size(&store_dir);
    let known = st["disks_known"].as_u64().unwrap_or(0);

    // Restart: how soon is the persisted inventory served? Three restarts, as one varies
    // with what sled's log holds and what the page cache kept.
    drop(session);
    let mut restarts = Vec::new();
    let mut ok = true;
    for _ in 0..3 {
        lab.host("a").stop();
        let t = Instant::now();
        lab.host("a").start();
        let mut s = loop {
            if let Ok(s) = Session::connect(&sock) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let (_, found) = timed(&mut s, "where 01f40007-83a0-4e4a-af6a-f578ca7a1f65");
        restarts.push(t.elapsed());
        ok &= found;
    }
    restarts.sort();

    println!(
        "## Scale: {} peers x {} disks, {} waves every {} s, churn {}",
        o.peers, o.disks, o.waves, o.interval, o.churn
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| records sent / datagrams sent | {total_records} / {total_datagrams} |");
    println!("| datagrams received by the daemon | {received} |");
    println!("| disks known after the waves | {known} |");
    if o.gossip {
        let g = &st["gossip"];
        println!(
            "| gossip members / live, after the waves | {} / {} |",
            g["members"], g["members_live"]
        );
        println!(
            "| gossip bytes in / out during the waves | {:.1} MB / {:.1} MB |",
            g["bytes_in"].as_f64().unwrap_or(0.0) / 1e6,
            g["bytes_out"].as_f64().unwrap_or(0.0) / 1e6
        );
        println!(
            "| inventories sent by the daemon (one per member that came up) / pulls sent | {} / {} |",
            g["inventories_sent"], g["pulls_sent"]
        );
    }
    let rate = |cpu: Duration, records: u64| records as f64 / cpu.as_secs_f64().max(0.001);
    if cpu_at_wave.len() >= quiet_waves && quiet_waves >= 2 {
        let first = cpu_at_wave[1] - cpu_at_wave[0];
        let steady = cpu_at_wave[quiet_waves - 1] - cpu_at_wave[1];
        let steady_records: u64 = wave_records[1..quiet_waves - 1].iter().sum();
        println!(
            "| ingest, first contact (wave 0, every record new) | {:.0} records/s ({:.2} s CPU) |",
            rate(first, wave_records[0]),
            first.as_secs_f64()
        );
        if steady_records > 0 {
            println!(
                "| ingest, later waves without queries (churn only) | {:.0} records/s ({:.2} s CPU per wave) |",
                rate(steady, steady_records),
                steady.as_secs_f64() / (quiet_waves - 2) as f64
            );
        }
    }
    println!(
        "| daemon CPU during all waves, queries included (wall {:.1} s) | {:.2} s |",
        wave_wall.as_secs_f64(),
        wave_cpu.as_secs_f64()
    );
    println!(
        "| RSS after the waves / peak | {:.1} MB / {:.1} MB |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    if let Some(kib) = rss_settled {
        println!(
            "| RSS {} s after the waves | {:.1} MB |",
            o.settle,
            kib as f64 / 1024.0
        );
    }
    println!(
        "| idle CPU, no peers / full fleet known (each 10 s) | {idle_empty:.2} % / {idle_full} |"
    );
    println!(
        "| `where` p50 / p99 during the later waves ({} samples) | {:.3} ms / {:.3} ms |",
        query_lat.len(),
        pct(&mut query_lat.clone(), 0.5),
        pct(&mut query_lat, 0.99)
    );
    println!(
        "| `list HOST` p50 / p99 during waves | {:.3} ms / {:.3} ms |",
        pct(&mut list_lat.clone(), 0.5),
        pct(&mut list_lat, 0.99)
    );
    println!("| queries that found nothing (disk moved away by churn) | {failures} |");
    println!(
        "| store size on disk | {:.1} MB |",
        store_bytes as f64 / 1_048_576.0
    );
    println!(
        "| bytes written by the daemon during the waves | {:.1} MB ({:.1} MB per wave) |",
        written as f64 / 1_048_576.0,
        written as f64 / 1_048_576.0 / o.waves as f64
    );
    println!(
        "| restart: start to first answer from the persisted inventory, min / median of 3 | {:.1} / {:.1} ms (found: {ok}) |",
        restarts[0].as_secs_f64() * 1000.0,
        restarts[1].as_secs_f64() * 1000.0
    );
    // The gossip members answer until here: `sim` ends them as it goes.
    drop(sim);
}

/// The simulator process, ended by its PID (`ip netns exec` execs it) however `scale`
/// ends, a failed step included: the gossip members never stop by themselves. A
/// multicast simulator has exited and been reaped already: std sends it nothing.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
