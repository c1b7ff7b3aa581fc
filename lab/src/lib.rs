//! The network-namespace lab: hosts joined by bridges, each running a real diskd.
//!
//! Layout: one namespace holds the bridges; each host is a namespace with `eth0` (a veth
//! into its bridge), an address 198.18.S.N/24, and a multicast route (224.0.0.0/4) on that
//! link. Three topologies: [`Lab::new`] puts every host on one bridge (198.18.0.0/24);
//! [`Lab::routed`] joins two links with a multicast router; [`Lab::two_subnets`] joins two
//! subnets with a router that forwards unicast only, the network unicast gossip is for.
//! The namespaces have no link to anything outside the lab, so nothing the lab sends can
//! reach the real network. Everything is torn down in `Drop`, which also runs when a test
//! panics.
//!
//! A crate of its own so that the integration tests and `diskd-bench` build the same lab.
//! Needs root (namespaces); callers check that first.

mod host;
pub use host::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Run a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// N hosts on one bridge.
pub struct Lab {
    prefix: String,
    bridge_ns: String,
    /// The hosts, named a, b, c, ...
    pub hosts: Vec<Host>,
    router: Option<String>,
    router_child: Option<Child>,
    /// Keeps the directories alive.
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Build `n` hosts (daemons not started). `args` are daemon flags for every host.
    pub fn new(n: usize, args: &[&str]) -> Lab {
        let mut lab = Lab::empty();
        lab.add_bridge("br0");
        for i in 0..n {
            let name = ((b'a' + i as u8) as char).to_string();
            lab.add_host(&name, "br0", 0, i + 1, None, args);
        }
        lab
    }

    /// A lab with its bridge namespace and nothing in it. Names are unique per process
    /// and lab (`dk<pid>x<n>...`), so labs of tests running in parallel never meet, and
    /// each lab may use the same addresses.
    fn empty() -> Lab {
        let id = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("dk{}x{id}", std::process::id());
        let bridge_ns = format!("{prefix}br");
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab {
            prefix,
            bridge_ns,
            hosts: Vec::new(),
            router: None,
            router_child: None,
            _dir: dir,
        };
        // From here on, Drop cleans up whatever was made, even if a step fails.
        sh(&["ip", "netns", "add", &lab.bridge_ns]);
        lab
    }

    /// A bridge in the bridge namespace. Snooping off: the bridge floods multicast to every
    /// port, as a dumb switch would, so group membership never depends on IGMP timing.
    fn add_bridge(&mut self, name: &str) {
        let br = &self.bridge_ns;
        sh(&[
            "ip",
            "-n",
            br,
            "link",
            "add",
            name,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", br, "link", "set", name, "up"]);
    }

    /// The router namespace: one leg per `(bridge, subnet)`, at 198.18.SUBNET.254/24, and
    /// IPv4 forwarding on. It has no multicast routing of its own (the kernel forwards
    /// multicast only for a multicast routing daemon, which `routed` adds), and no link
    /// outside the lab: a datagram for any other address dies here.
    fn add_router(&mut self, legs: &[(&str, usize)]) {
        let r = format!("{}r", self.prefix);
        sh(&["ip", "netns", "add", &r]);
        self.router = Some(r.clone());
        let br = self.bridge_ns.clone();
        for (i, (bridge, subnet)) in legs.iter().enumerate() {
            let veth = format!("r{i}");
            let dev = format!("eth{i}");
            sh(&[
                "ip", "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", &dev,
                "netns", &r,
            ]);
            sh(&[
                "ip", "-n", &br, "link", "set", &veth, "master", bridge, "up",
            ]);
            sh(&[
                "ip",
                "-n",
                &r,
                "addr",
                "add",
                &format!("198.18.{subnet}.254/24"),
                "dev",
                &dev,
            ]);
            sh(&["ip", "-n", &r, "link", "set", &dev, "up"]);
        }
        sh(&["ip", "-n", &r, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }

    /// The router's namespace, in a lab that has one.
    pub fn router_ns(&self) -> Option<&str> {
        self.router.as_deref()
    }

    /// Two subnets joined by a router that forwards unicast and never multicast: hosts
    /// `a1..aN` on 198.18.1.0/24 and `b1..bN` on 198.18.2.0/24 (`N` = `per_subnet`; host
    /// `a2` is 198.18.1.2), each with its default route via the router (198.18.S.254).
    /// Multicast stays on each subnet whatever its TTL, so only unicast (gossip) can carry
    /// what one subnet knows to the other. Daemons are not started; `args` are daemon flags
    /// for every host (node names are the host names).
    pub fn two_subnets(per_subnet: usize, args: &[&str]) -> Lab {
        assert!(
            (1..=9).contains(&per_subnet),
            "two_subnets: 1 to 9 hosts per subnet"
        );
        let mut lab = Lab::empty();
        for (letter, subnet) in [('a', 1), ('b', 2)] {
            let bridge = format!("br{subnet}");
            lab.add_bridge(&bridge);
            let gateway = format!("198.18.{subnet}.254");
            for i in 1..=per_subnet {
                lab.add_host(
                    &format!("{letter}{i}"),
                    &bridge,
                    subnet,
                    i,
                    Some(&gateway),
                    args,
                );
            }
        }
        lab.add_router(&[("br1", 1), ("br2", 2)]);
        lab
    }

    /// Whether this kernel can route multicast (`CONFIG_IP_MROUTE`): asked in a fresh
    /// namespace, whose `/proc/net/ip_mr_vif` exists only when it can. A kernel without it
    /// forwards no multicast whatever a routing daemon asks, so [`Lab::routed`] cannot work.
    pub fn multicast_routing() -> bool {
        let ns = format!(
            "dk{}mr{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &ns]);
        let probe = Command::new("ip")
            .args(["netns", "exec", &ns, "test", "-e", "/proc/net/ip_mr_vif"])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        probe.map(|s| s.success()).unwrap_or(false)
    }

    /// Two links joined by a multicast router (smcrouted forwarding 230.1.2.3 from link 0
    /// to link 1): host `a` on 198.18.0.0/24, host `b` on 198.18.1.0/24, each with its
    /// default route via the router. A datagram from a reaches b only with a TTL of at
    /// least 2. Needs a kernel with multicast routing ([`Lab::multicast_routing`]).
    pub fn routed(args: &[&str]) -> Lab {
        let mut lab = Lab::empty();
        lab.add_bridge("br0");
        lab.add_bridge("br1");
        lab.add_host("a", "br0", 0, 1, Some("198.18.0.254"), args);
        lab.add_host("b", "br1", 1, 1, Some("198.18.1.254"), args);
        lab.add_router(&[("br0", 0), ("br1", 1)]);
        let r = lab.router.clone().expect("router namespace");
        let dir = lab._dir.path().join("router");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("smcroute.conf");
        std::fs::write(
            &conf,
            "phyint eth0 enable\nphyint eth1 enable\nmroute from eth0 group 230.1.2.3 to eth1\n",
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &r, "smcrouted", "-n", "-N", "-l", "debug"])
            .arg("-f")
            .arg(&conf)
            .arg("-u")
            .arg(dir.join("smcroute.sock"))
            .arg("-P")
            .arg(dir.join("smcroute.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("smcroute.log")).unwrap())
            .spawn()
            .expect("smcrouted (Debian package smcroute)");
        lab.router_child = Some(child);
        // Ready when the kernel has its multicast route.
        let start = Instant::now();
        loop {
            let out = Command::new("ip")
                .args(["-n", &r, "mroute", "show"])
                .output()
                .unwrap();
            let vifs = std::fs::read_to_string(format!(
                "/proc/{}/net/ip_mr_vif",
                lab.router_child.as_ref().unwrap().id()
            ))
            .unwrap_or_default();
            if vifs.lines().count() >= 3
                || String::from_utf8_lossy(&out.stdout).contains("230.1.2.3")
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "smcrouted did not set up its VIFs"
            );
            // Poll interval of a wait on a real condition, not a wait for time.
            std::thread::sleep(Duration::from_millis(20));
        }
        lab
    }

    fn add_host(
        &mut self,
        name: &str,
        bridge: &str,
        subnet: usize,
        number: usize,
        gateway: Option<&str>,
        args: &[&str],
    ) {
        let ns = format!("{}{}", self.prefix, name);
        let dir = self._dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("198.18.{subnet}.{number}");
        let addr6 = format!("fd00:198:18:{subnet}::{number}");
        sh(&["ip", "netns", "add", &ns]);
        let host = Host {
            name: name.to_string(),
            node: name.to_string(),
            ns: ns.clone(),
            addr: addr.clone(),
            addr6: addr6.clone(),
            blkid: dir.join("blkid"),
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            gateway: gateway.map(str::to_string),
            log_filter: "diskd=debug,info".to_string(),
            hardware: false,
            bridge: bridge.to_string(),
            child: None,
        };
        host.set_disks("");
        self.hosts.push(host);
        self.plug(name);
    }

    /// Connect host `name` to its bridge: veth, addresses, the multicast route, and the
    /// default route when its subnet has a router.
    fn plug(&self, name: &str) {
        let h = self
            .hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"));
        let (ns, addr, addr6, bridge) = (&h.ns, &h.addr, &h.addr6, &h.bridge);
        let veth = format!("v{name}");
        let br = &self.bridge_ns;
        sh(&[
            "ip", "-n", br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ]);
        sh(&["ip", "-n", br, "link", "set", &veth, "master", bridge, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        // The only route for multicast: the lab link.
        sh(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        if let Some(gw) = &h.gateway {
            sh(&["ip", "-n", ns, "route", "add", "default", "via", gw]);
        }
    }

    /// Pull host `name`'s cable: its `eth0` disappears (the interface is gone).
    pub fn unplug(&mut self, name: &str) {
        sh(&[
            "ip",
            "-n",
            &self.bridge_ns,
            "link",
            "del",
            &format!("v{name}"),
        ]);
    }

    /// Plug host `name` back into its bridge, with the same addresses and routes.
    pub fn replug(&mut self, name: &str) {
        self.plug(name);
    }

    /// Host by name.
    pub fn host(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Host by name, borrowed shared: several hosts can be watched at once (a `wait_for`
    /// that compares what two hosts see).
    pub fn get(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Start every host's daemon.
    pub fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
    }

    /// Print every daemon's log (for a failing test).
    pub fn dump_logs(&self) {
        for h in &self.hosts {
            eprintln!("----- log of {} -----\n{}", h.name, h.log_text());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for h in &mut self.hosts {
            h.kill9();
        }
        if let Some(mut c) = self.router_child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
        }
        if let Some(r) = &self.router {
            let _ = Command::new("ip").args(["netns", "del", r]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns])
            .output();
    }
}

/// Python that opens `s`, a UDP socket bound to the default group and port and joined to
/// the group: the start of every script that listens in on the lab link like a Perl diskd
/// or an attacker would.
pub const PY_JOIN_GROUP: &str = "import socket,struct,time\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('230.1.2.3',32003))\n\
s.setsockopt(socket.IPPROTO_IP,socket.IP_ADD_MEMBERSHIP,struct.pack('4s4s',socket.inet_aton('230.1.2.3'),socket.inet_aton('0.0.0.0')))\n";

/// A fake blkid line for a disk.
pub fn disk_line(device: &str, uuid: &str, label: &str) -> String {
    format!("{device}: UUID=\"{uuid}\" LABEL=\"{label}\" TYPE=\"ext4\"\n")
}

/// The `diskd` binary: `$DISKD_BIN`, else next to the running executable (a bench binary in
/// `target/*/`) or one level up (a test binary in `target/*/deps/`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DISKD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    for cand in [dir.join("diskd"), dir.join("../diskd")] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "diskd binary not found next to {}; set DISKD_BIN",
        exe.display()
    );
}

/// Poll `cond` until it holds or `limit` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        // Poll interval of a wait on a real condition, not a wait for time.
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Write a fake blkid printing `output`; written aside and renamed, so a running daemon
/// never executes a half-written script.
pub fn fake_blkid(path: &Path, output: &str) {
    let data = path.with_extension("out");
    std::fs::write(&data, output).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("#!/bin/sh\ncat '{}'\n", data.display())).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The output of one client run.
pub struct Run {
    /// What ran.
    pub cmd: String,
    /// Its output.
    pub out: Output,
}

impl Run {
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    /// Exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    /// Assert the exit code.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\ncommand: {}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not JSON ({e}):\n{}\n{}",
                self.cmd,
                self.stdout(),
                self.stderr()
            )
        })
    }
}

/// Run `diskd ARGS` as a client.
pub fn run_diskd(args: &[&str]) -> Run {
    let out = Command::new(binary())
        .args(args)
        .env_remove("DISKD_SOCKET")
        .env_remove("DISKD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run diskd");
    Run {
        cmd: format!("diskd {}", args.join(" ")),
        out,
    }
}
