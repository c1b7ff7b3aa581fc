//! `diskd mount`, end to end in the lab: a real loop device on host a, an sshd in a's
//! network and mount namespace, and host b mounting the disk remotely and reading a file
//! through sshfs. Needs root. Everything (mounts, loop devices, sshd, namespaces) is torn
//! down by guards, also when the test fails.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diskd_lab::{sh, wait_for, Lab};

const LONG: Duration = Duration::from_secs(20);
const HOSTILE: &str = "x; touch /tmp/pwned $(id)";

fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

/// Loop devices and processes to undo, in reverse order of creation.
#[derive(Default)]
struct Cleanup {
    loops: Vec<String>,
    children: Vec<Child>,
    /// (pid whose mount namespace holds it, mountpoint)
    mounts: Vec<(u32, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pid, m) in self.mounts.iter().rev() {
            let _ = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "umount", "-l", m])
                .output();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in self.loops.iter().rev() {
            let _ = Command::new("losetup").args(["-d", l]).output();
        }
    }
}

/// An image with one known file, attached to a loop device.
fn image(
    dir: &Path,
    cleanup: &mut Cleanup,
    name: &str,
    fs: &str,
    label: &str,
    uuid: &str,
) -> String {
    let content = dir.join(format!("{name}-content"));
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), format!("hello from {name}\n")).unwrap();
    let img = dir.join(format!("{name}.img"));
    let size = if fs == "btrfs" { 128 << 20 } else { 16 << 20 };
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let c = content.to_str().unwrap();
    let i = img.to_str().unwrap();
    match fs {
        "ext4" => sh(&["mkfs.ext4", "-q", "-F", "-L", label, "-U", uuid, "-d", c, i]),
        _ => sh(&[
            "mkfs.btrfs",
            "-q",
            "-f",
            "-L",
            label,
            "-U",
            uuid,
            "--rootdir",
            c,
            i,
        ]),
    };
    let out = sh(&["losetup", "--find", "--show", i]);
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    cleanup.loops.push(dev.clone());
    dev
}

/// Mountpoints (and their options) in the mount namespace of `pid`.
fn mounts_of(pid: u32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    diskd_watchers::mounts::parse_mountinfo(&text)
        .into_iter()
        .map(|m| {
            // parse_mountinfo does not keep options; read them from the raw line.
            let opts = text
                .lines()
                .find(|l| {
                    l.split(' ').nth(4).map(|p| p.replace("\\040", " "))
                        == Some(m.mountpoint.clone())
                })
                .and_then(|l| l.split(' ').nth(5))
                .unwrap_or("")
                .to_string();
            (m.mountpoint, opts)
        })
        .collect()
}

fn mounted_at(pid: u32, dir: &str) -> Option<String> {
    mounts_of(pid)
        .into_iter()
        .find(|(m, _)| m == dir)
        .map(|(_, o)| o)
}

#[test]
#[ignore = "needs root"]
fn mount_a_remote_disk_and_reach_it_over_sshfs() {
    util::require_root();
    let _ = std::fs::remove_file("/tmp/pwned");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut cleanup = Cleanup::default();

    let (u_ok, u_denied, u_hostile, u_c) = (uuid(), uuid(), uuid(), uuid());
    let dev_ok = image(w, &mut cleanup, "ok", "ext4", "mountable", &u_ok);
    let dev_denied = image(w, &mut cleanup, "denied", "ext4", "not-allowed", &u_denied);
    let dev_hostile = image(w, &mut cleanup, "hostile", "btrfs", HOSTILE, &u_hostile);
    let dev_c = image(w, &mut cleanup, "c", "ext4", "disk-of-c", &u_c);

    let key = w.join("fleet.key");
    util::run_diskd(&["keygen", key.to_str().unwrap()], None).expect_code(0);
    sh(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        w.join("id").to_str().unwrap(),
    ]);
    let root_a = w.join("root-a");
    let attach_dir = w.join("attached here");
    let attach_cmd = format!(
        "sshfs -o IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes root@{{addr}}:{{path}} {{target}}",
        w.join("id").display()
    );

    // a owns the disks, b asks, c has a disk but does not allow mounts; d is a rogue
    // without the key.
    let common = [
        "--key-file",
        key.to_str().unwrap(),
        "--announce-interval",
        "1s",
        "--mount-interval",
        "1s",
    ];
    let mut lab = Lab::new(4, &common);
    {
        let a = lab.host("a");
        a.blkid = PathBuf::from("blkid");
        for d in [&dev_ok, &dev_denied, &dev_hostile] {
            a.args.extend(["--include-device".into(), d.clone()]);
        }
        a.args.extend([
            "--allow-mount".into(),
            "--mount-root".into(),
            root_a.display().to_string(),
            "--mount-allow".into(),
            u_ok.clone(),
            "--mount-allow".into(),
            HOSTILE.into(),
        ]);
        let b = lab.host("b");
        b.args.extend([
            "--attach-command".into(),
            attach_cmd.clone(),
            "--allow-mount".into(),
        ]);
        let c = lab.host("c");
        c.blkid = PathBuf::from("blkid");
        c.args.extend([
            "--include-device".into(),
            dev_c.clone(),
            "--mount-allow".into(),
            u_c.clone(),
        ]);
    }
    lab.host("a").start();
    lab.host("b").start();
    lab.host("c").start();
    let a_pid = lab.host("a").pid().unwrap();
    let b_pid = lab.host("b").pid().unwrap();
    let target = format!("{}/{}", root_a.display(), u_ok);
    cleanup.mounts.push((a_pid, target.clone()));
    cleanup
        .mounts
        .push((b_pid, attach_dir.display().to_string()));

    // sshd in a's network and mount namespace: key auth only, on the lab address.
    let sshd_dir = w.join("sshd");
    std::fs::create_dir_all(&sshd_dir).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let hostkey = sshd_dir.join("host_key");
    sh(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        hostkey.to_str().unwrap(),
    ]);
    std::fs::copy(w.join("id.pub"), sshd_dir.join("authorized_keys")).unwrap();
    let conf = sshd_dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port 22\nListenAddress 198.18.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n",
            hostkey.display(),
            sshd_dir.join("sshd.pid").display(),
            sshd_dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let sshd = Command::new("nsenter")
        .args([
            "-t",
            &a_pid.to_string(),
            "-m",
            "-n",
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
        ])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sshd_dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    cleanup.children.push(sshd);

    // Rogue d records everything from the start, to replay it later.
    let d_ns = lab.hosts[3].ns.clone();
    let capture = w.join("capture.hex");
    let recorder = Command::new("ip")
        .args(["netns", "exec", &d_ns, "python3", "-c"])
        .arg(format!(
            "{}f=open('{}','w')\n\
             while True:\n\
             \x20   d,a=s.recvfrom(70000)\n\
             \x20   if a[0]=='198.18.0.2': f.write(d.hex()+'\\n'); f.flush()\n",
            diskd_lab::PY_JOIN_GROUP,
            capture.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    cleanup.children.push(recorder);

    let b = lab.host("b");
    wait_for("b to see a's disks", LONG, || {
        !b.query(&u_ok).is_empty() && !b.query(&u_denied).is_empty()
    });
    wait_for("b to see c's disk", LONG, || !b.query(&u_c).is_empty());
    wait_for("sshd to listen", LONG, || {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.hosts[0].ns, "ss", "-ltn"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("198.18.0.1:22")
    });

    // 1. Mount from b, attach over sshfs, read the known file through it.
    let b = lab.host("b");
    let dir = attach_dir.to_str().unwrap();
    let r = b.client(&["mount", &u_ok, "--attach", dir, "--json"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["host"], "a");
    assert_eq!(v["device"], dev_ok.as_str());
    assert_eq!(v["mountpoint"], target.as_str());
    assert_eq!(v["attached"], dir);
    let opts = mounted_at(a_pid, &target).expect("not mounted in a's mount namespace");
    assert!(
        opts.contains("nosuid") && opts.contains("nodev"),
        "options {opts}"
    );
    let cat = sh(&[
        "nsenter",
        "-t",
        &b_pid.to_string(),
        "-m",
        "cat",
        &format!("{dir}/hello.txt"),
    ]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "hello from ok\n");
    // The MountWatcher saw it: b lists the mountpoint within an announce.
    wait_for("b to list a's new mountpoint", LONG, || {
        b.query(&u_ok).first().is_some_and(|d| {
            d["mountpoints"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x == target.as_str()))
        })
    });

    // 2. Idempotent.
    let r2 = b.client(&["mount", &u_ok, "--attach", dir, "--json"]);
    r2.expect_code(0);
    assert_eq!(r2.json(), v);
    assert_eq!(
        mounts_of(a_pid)
            .iter()
            .filter(|(m, _)| *m == target)
            .count(),
        1
    );
    assert_eq!(mounts_of(b_pid).iter().filter(|(m, _)| m == dir).count(), 1);

    // 3. umount detaches on b and unmounts on a.
    let r = b.client(&["umount", &u_ok, "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()["detached"], dir);
    assert!(mounted_at(b_pid, dir).is_none(), "still attached on b");
    assert!(mounted_at(a_pid, &target).is_none(), "still mounted on a");

    // 4a. Not in mount.allow.
    let r = b.client(&["mount", &u_denied]);
    r.expect_code(1);
    assert!(
        r.stderr().contains("does not match mount.allow"),
        "{}",
        r.stderr()
    );
    // 4b. A host without --allow-mount.
    let r = b.client(&["mount", &u_c]);
    r.expect_code(1);
    assert!(
        r.stderr().contains("mount.enabled is false"),
        "{}",
        r.stderr()
    );
    // 4c. A request without the key (plaintext, from rogue d).
    let a_id = lab.host("a").status()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = diskd::peer::wire::encode(&diskd::peer::wire::Envelope {
        node_id: "0123456789abcdef0123456789abcdef".into(),
        node: "rogue".into(),
        boot: 1,
        seq: 1,
        sent_ms: diskd::model::now_millis(),
        body: diskd::peer::wire::Body::MountRequest(diskd::peer::wire::MountRequest {
            request_id: 7,
            target: a_id,
            uuid: u_ok.clone(),
            read_only: false,
            unmount: false,
        }),
    });
    let rejected = |lab: &mut Lab, why: &str| {
        lab.host("a").status()["counters"]["rejected_by_reason"][why]
            .as_u64()
            .unwrap_or(0)
    };
    let plain_before = rejected(&mut lab, "plaintext");
    let replay_before = rejected(&mut lab, "replay");
    let send = |datagrams: Vec<String>| {
        format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for h in {datagrams:?}:\n    s.sendto(bytes.fromhex(h),('230.1.2.3',32003))\n"
        )
    };
    sh(&[
        "ip",
        "netns",
        "exec",
        &d_ns,
        "python3",
        "-c",
        &send(vec![hex::encode(forged)]),
    ]);
    wait_for("a to reject the unkeyed request", LONG, || {
        rejected(&mut lab, "plaintext") > plain_before
    });
    // 4d. Replays of everything b sent, mount request included.
    let captured: Vec<String> = std::fs::read_to_string(&capture)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!captured.is_empty());
    sh(&[
        "ip",
        "netns",
        "exec",
        &d_ns,
        "python3",
        "-c",
        &send(captured.clone()),
    ]);
    // Every replay counted as rejected means none was acted on, so no pause is needed
    // before checking that nothing got mounted.
    wait_for("a to reject the replays", LONG, || {
        rejected(&mut lab, "replay") >= replay_before + captured.len() as u64
    });
    assert!(
        mounted_at(a_pid, &target).is_none(),
        "a forged or replayed request mounted the disk"
    );
    assert!(mounts_of(a_pid)
        .iter()
        .all(|(m, _)| !m.starts_with(&root_a.display().to_string())));

    // 5. The hostile label mounts under its UUID, and nothing else runs.
    let b = lab.host("b");
    let r = b.client(&["mount", HOSTILE, "--json"]);
    r.expect_code(0);
    let hostile_target = format!("{}/{}", root_a.display(), u_hostile);
    cleanup.mounts.push((a_pid, hostile_target.clone()));
    assert_eq!(r.json()["mountpoint"], hostile_target.as_str());
    assert!(mounted_at(a_pid, &hostile_target).is_some());
    assert!(
        !Path::new("/tmp/pwned").exists(),
        "the label ran as a command"
    );
    let entries: Vec<_> = std::fs::read_dir(&root_a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e.to_string_lossy() == u_hostile || e.to_string_lossy() == u_ok),
        "{entries:?}"
    );
    b.client(&["umount", &u_hostile]).expect_code(0);
    assert!(mounted_at(a_pid, &hostile_target).is_none());
}
