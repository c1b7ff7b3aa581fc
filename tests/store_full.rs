//! A full disk under the store: the daemon keeps answering from memory, `status` says the
//! store is failing and why, and once there is room again the store recovers by itself,
//! with nothing lost (a `kill -9` afterwards finds every disk).
//!
//! Needs root (mounts a small tmpfs as the store's parent), so `#[ignore = "needs root"]`.
//! A guard kills the daemon and unmounts the tmpfs, also when an assertion fails.

use crate::util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use util::{fake_blkid, wait_for, TestDaemon};

const DEADLINE: Duration = Duration::from_secs(60);

/// `blkid -o export` output for `n` disks named `tag`, with long labels.
fn blkid(n: usize, tag: &str) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "DEVNAME=/dev/{tag}{i}\nLABEL={tag}-{i}-{}\nUUID={i:08x}-{tag:0>4}-4000-8000-000000000000\nTYPE=ext4\n\n",
            "l".repeat(180)
        ));
    }
    out
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon and the tmpfs under its store: the daemon goes first, then the mount.
struct Guard {
    d: TestDaemon,
    mnt: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.d.kill9();
        let _ = Command::new("umount").arg(self.mnt.path()).status();
    }
}

/// Write `dir/filler` until the filesystem is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // Whatever is left below a block.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path
}

#[test]
#[ignore = "needs root"]
fn a_full_store_disk_keeps_answering_and_recovers_by_itself() {
    util::require_root();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap().to_string();
    sh(&["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", &m]);
    let mut d = TestDaemon::new(&blkid(20, "a"));
    d.store = mnt.path().join("store");
    let mut g = Guard { d: d.start(), mnt };
    g.d.wait_query("/dev/a19");
    let s = g.d.status_json();
    assert_eq!(
        (&s["store_state"], &s["store_failures"]),
        (&"ok".into(), &0.into())
    );

    // The disk fills up; the watcher finds 3,000 more disks.
    fill(g.mnt.path());
    fake_blkid(&g.d.blkid, &(blkid(20, "a") + &blkid(3000, "b")));
    g.d.client(&["refresh"]).expect_code(0);
    // Queries answer what the watcher found, from memory.
    let (code, found) = g.d.query_json("/dev/b2999");
    assert_eq!(code, 0, "{found}");
    assert_eq!(found[0]["live"], true);
    g.d.wait_query("/dev/a3");
    let s = g.d.status_json();
    assert_eq!(s["store_state"], "failing", "{s}\n{}", g.d.log_text());
    let err = s["store_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("No space left"), "{s}");
    assert!(s["store_failures"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["disks_local"], 3020);
    let text = g.d.client(&["status"]).stdout();
    assert!(
        text.contains("FAILING") && text.contains("No space left"),
        "{text}"
    );
    // It stays failing while the disk is full: retries come and fail.
    let retries = |s: &serde_json::Value| s["store_retries"].as_u64().unwrap_or(0);
    let before = retries(&s);
    wait_for("two more retries", DEADLINE, || {
        retries(&g.d.status_json()) >= before + 2
    });
    assert_eq!(g.d.status_json()["store_state"], "failing");

    // Room again: the store recovers by itself.
    sh(&["mount", "-o", "remount,size=64m", &m]);
    wait_for("the store to work again", DEADLINE, || {
        let s = g.d.status_json();
        s["store_state"] == "ok" && s["store_error"].is_null()
    });
    let text = g.d.client(&["status"]).stdout();
    assert!(text.contains("store      ok"), "{text}");
    let log = g.d.log_text();
    assert!(log.contains("store writes fail"), "{log}");
    assert!(log.contains("store writes work again"), "{log}");

    // Durable: a kill -9 and a restart with a blkid that sees nothing find every disk
    // (as last known locations), the ones from before the disk filled and during.
    g.d.kill9();
    fake_blkid(&g.d.blkid, "");
    g.d.restart();
    for term in ["/dev/a0", "/dev/a19", "/dev/b0", "/dev/b1500", "/dev/b2999"] {
        let (code, found) = g.d.query_json(term);
        assert_eq!(code, 0, "{term} lost after the recovery: {found}");
    }
    let s = g.d.status_json();
    assert_eq!(s["store_state"], "ok", "{s}");
    assert_eq!(s["disks_known"], 3020, "{s}");
}
