//! `diskd-bench devices`: how fast a real loop device attached on host A, and a mount of
//! it, show up in a query on host B (event-driven detection + change-triggered announce).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diskd::client::Session;
use diskd_lab::Lab;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Poll `where UUID --json` on B until `pred` holds for the first row.
fn until(
    b: &mut Session,
    uuid: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = b.call(&format!("where {uuid} --json")) {
            if let Some(line) = r.body.first() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v.get(0).is_some_and(&pred) {
                        return Some(start.elapsed());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Run `trials` attach/mount/umount/detach cycles and print the figures.
pub fn devices(trials: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("bench.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .expect("image");
    let uuid = "b3b3b3b3-0000-4000-8000-00000000b3b3";
    sh(&[
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        "bench",
        "-U",
        uuid,
        img.to_str().unwrap(),
    ]);
    // Ten-minute intervals: only kernel events can explain what B sees in milliseconds.
    let mut lab = Lab::new(
        2,
        &[
            "--announce-interval",
            "600s",
            "--disk-interval",
            "600s",
            "--mount-interval",
            "600s",
        ],
    );
    {
        let a = lab.host("a");
        a.blkid = "blkid".into();
        a.args
            .extend(["--include-device".into(), "/dev/loop*".into()]);
    }
    lab.start_all();
    let a_pid = lab.host("a").pid().expect("pid");
    let mut b = Session::connect(&lab.host("b").socket()).expect("connect b");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_s = mnt.to_str().unwrap().to_string();
    let mut attach_t = Vec::new();
    let mut mount_t = Vec::new();
    for i in 0..trials {
        let dev = sh(&["losetup", "--find", "--show", img.to_str().unwrap()]);
        let t = until(&mut b, uuid, Duration::from_secs(10), |r| {
            r["live"] == true && r["device"] == dev.as_str()
        });
        let t = t.unwrap_or_else(|| panic!("trial {i}: b never saw the attach"));
        attach_t.push(t);
        // Mount in A's mount namespace (the daemon's view).
        let start = Instant::now();
        sh(&[
            "nsenter",
            "-t",
            &a_pid.to_string(),
            "-m",
            "mount",
            &dev,
            &mnt_s,
        ]);
        let seen = until(&mut b, uuid, Duration::from_secs(10), |r| {
            r["mountpoints"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x == mnt_s.as_str()))
        });
        let mount_lat = start.elapsed();
        seen.unwrap_or_else(|| panic!("trial {i}: b never saw the mount"));
        mount_t.push(mount_lat);
        sh(&["nsenter", "-t", &a_pid.to_string(), "-m", "umount", &mnt_s]);
        sh(&["losetup", "-d", &dev]);
        until(&mut b, uuid, Duration::from_secs(10), |r| {
            r["live"] == false
        })
        .unwrap_or_else(|| panic!("trial {i}: b never saw the detach"));
        eprint!("\rtrial {}/{trials}", i + 1);
    }
    eprintln!();
    let _ = Path::new(&mnt);
    println!(
        "loop device attached on A -> found live by `where` on B, {trials} trials: p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut attach_t.clone(), 0.5),
        pct(&mut attach_t, 0.99)
    );
    println!(
        "mount on A -> mountpoint shown by `where` on B, {trials} trials: p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut mount_t.clone(), 0.5),
        pct(&mut mount_t, 0.99)
    );
}
