//! One host of the lab: a network namespace with its own diskd, store, fake blkid and
//! socket, started and stopped by PID.

use super::*;

/// One lab host.
pub struct Host {
    /// Host name in the lab (`a`, `b`, ...).
    pub name: String,
    /// The daemon's node name (the host name unless a test changes it).
    pub node: String,
    /// Namespace name.
    pub ns: String,
    /// IPv4 address on the lab link.
    pub addr: String,
    /// IPv6 address on the lab link.
    pub addr6: String,
    /// Socket, store, fake blkid live here.
    pub dir: PathBuf,
    /// Extra daemon flags.
    pub args: Vec<String>,
    /// The fake blkid script.
    pub blkid: PathBuf,
    /// The router of the host's default route, if its subnet has one. Kept so that
    /// `replug` restores the route along with the addresses.
    pub gateway: Option<String>,
    /// The daemon's `RUST_LOG` (default `diskd=debug,info`); a benchmark that times
    /// steps from the log turns on a module's trace lines here.
    pub log_filter: String,
    /// Run the sysfs hardware watcher (off by default: every lab host shares this
    /// machine's block devices, which would show up on all of them as blank disks).
    pub hardware: bool,
    /// The bridge the host's cable goes into (kept for `replug`).
    pub(super) bridge: String,
    pub(super) child: Option<Child>,
}

impl Host {
    /// The control socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The daemon log path.
    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The daemon log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Replace what the fake blkid prints.
    pub fn set_disks(&self, blkid_output: &str) {
        fake_blkid(&self.blkid, blkid_output);
    }

    /// Run a client command against this host's daemon (from the root namespace: the
    /// control socket is a file, namespaces do not matter to it).
    pub fn client(&self, args: &[&str]) -> Run {
        let sock = self.socket().to_string_lossy().into_owned();
        let mut all = vec!["--socket", sock.as_str()];
        all.extend_from_slice(args);
        run_diskd(&all)
    }

    /// `query TERM --json`, parsed; `[]` when nothing matched.
    pub fn query(&self, term: &str) -> Vec<serde_json::Value> {
        let r = self.client(&["query", term, "--json"]);
        assert!(matches!(r.code(), 0 | 1), "query failed: {}", r.stderr());
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let r = self.client(&["status", "--json"]);
        r.expect_code(0);
        r.json()
    }

    /// `peers --json`, parsed.
    pub fn peers(&self) -> Vec<serde_json::Value> {
        let r = self.client(&["peers", "--json"]);
        r.expect_code(0);
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// Start the daemon in this host's namespace and wait until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(binary())
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--store")
            .arg(self.dir.join("store"))
            .arg("--blkid")
            .arg(&self.blkid)
            .args(["--node-name", &self.node])
            .args((!self.hardware).then_some("--no-hardware"))
            // The machine's own disks are no lab host's: SMART only from a fake smartctl.
            .args((!self.args.iter().any(|a| a == "--smartctl")).then_some("--no-smart"))
            .args(&self.args)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // `ip netns exec` execs the program: the child's PID is the daemon's.
        self.child = Some(cmd.spawn().expect("spawn daemon in namespace"));
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited at start ({st}); log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} not ready; log:\n{}",
                self.name,
                self.log_text()
            );
            // Poll interval of a wait on a real condition, not a wait for time; short, as
            // `diskd-bench scale` times a restart through it.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The daemon's PID, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// SIGKILL the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Reaped already: its PID may be another process's now, so it gets no signal.
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                // Poll interval of a wait on a real condition, not a wait for time.
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("{} did not stop on SIGTERM", self.name);
        }
    }

    /// Run a command inside this host's namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Run a command inside this host's namespace and return its output whatever its exit
    /// status: for probes whose failure is an answer (a datagram that did not arrive).
    pub fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.ns))
    }
}
