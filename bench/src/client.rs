//! `diskd-bench client`: how long a one-shot `diskd query` takes from exec to exit, the
//! way a script calling it in a loop sees it, beside `/bin/true` and `diskd --version` on
//! the same machine (what any process, and this binary alone, costs to start).
//!
//! Starts its own daemon (loopback-only peer flags, no hardware watcher, a fake blkid with
//! one disk) in a temp dir, and stops it by its PID at the end. No root needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `diskd-bench client`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOptions {
    /// Runs of each command (after 20 unmeasured ones).
    #[arg(long, default_value_t = 500)]
    pub runs: usize,
    /// The diskd binary to measure (default: the one built beside this bench).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// The daemon, stopped (by its PID) when dropped.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(bin: &Path) -> (Daemon, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blkid = dir.path().join("blkid");
    diskd_lab::fake_blkid(
        &blkid,
        "/dev/sdb1: UUID=\"6fe176fb-83a0-4e4a-af6a-f578ca7a1f65\" LABEL=\"backup\" TYPE=\"ext4\"\n",
    );
    let socket = dir.path().join("sock");
    let port = 40000 + (std::process::id() % 20000) as u16;
    let child = Command::new(bin)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--blkid")
        .arg(&blkid)
        .args([
            "--no-hardware",
            "--no-smart",
            "--interface",
            "lo",
            "--ttl",
            "0",
        ])
        .args(["--group", &format!("239.255.{}.{}", port >> 8, port & 0xff)])
        .args(["--port", &port.to_string(), "--node-name", "bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start diskd daemon");
    let daemon = Daemon { child, _dir: dir };
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (daemon, socket)
}

/// Median and 90th percentile of `runs` runs of `argv`, in µs (20 warm-up runs first).
fn time(argv: &[&str], runs: usize) -> (f64, f64) {
    let run = || {
        let start = Instant::now();
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        assert!(status.success(), "{argv:?}: {status}");
        start.elapsed().as_secs_f64() * 1e6
    };
    for _ in 0..20 {
        run();
    }
    let mut t: Vec<f64> = (0..runs).map(|_| run()).collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[t.len() * 9 / 10])
}

pub fn client(o: &ClientOptions) {
    let bin = o.binary.clone().unwrap_or_else(diskd_lab::binary);
    let (_daemon, socket) = start_daemon(&bin);
    let b = bin.to_str().expect("UTF-8 path");
    let s = socket.to_str().expect("UTF-8 path");
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "binary {} ({:.1} MB), {} runs each",
        bin.display(),
        size as f64 / 1e6,
        o.runs
    );
    println!();
    println!("| command | median | p90 |");
    println!("|---|---:|---:|");
    for (name, argv) in [
        ("/bin/true", vec!["/bin/true"]),
        ("diskd --version", vec![b, "--version"]),
        (
            "diskd query backup",
            vec![b, "--socket", s, "query", "backup"],
        ),
        (
            "diskd query backup --json",
            vec![b, "--socket", s, "query", "backup", "--json"],
        ),
    ] {
        let (p50, p90) = time(&argv, o.runs);
        println!("| `{name}` | {:.2} ms | {:.2} ms |", p50 / 1e3, p90 / 1e3);
    }
}
