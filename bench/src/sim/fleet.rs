//! The simulated fleet: its nodes, each a real peer layer over the simulated network, and
//! what the run does to them (start, change a disk, crash, restart).

use super::*;

/// A running peer layer.
pub(super) struct Running {
    pub(super) handle: PeerHandle,
    pub(super) shutdown: CancellationToken,
    pub(super) local_changed: Arc<Notify>,
    pub(super) fleet: broadcast::Receiver<Arc<FleetEvent>>,
    pub(super) _mount_jobs: mpsc::Receiver<IncomingMount>,
}

/// One node of the fleet, as the observer keeps it.
pub(super) struct Node {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) store: Store,
    pub(super) disks: Vec<DiskRecord>,
    pub(super) seeds: Vec<SocketAddr>,
    pub(super) running: Option<Running>,
    /// Ground truth: running and reachable (not crashed).
    pub(super) alive: bool,
    /// Layers started for it so far (a restart starts another).
    pub(super) runs: u64,
    /// When its store first held every initial node's disks.
    pub(super) complete_at: Option<Duration>,
}

/// One timed change: a disk added on `node` at `at`; when each other node first saw it.
pub(super) struct Change {
    pub(super) node: usize,
    pub(super) uuid: String,
    pub(super) at: Duration,
    pub(super) seen: BTreeMap<usize, Duration>,
}

/// The fleet and what the observer tracks.
pub(super) struct Sim<'a> {
    pub(super) o: &'a SimOptions,
    pub(super) net: SimNet,
    pub(super) mcast: MemoryHub,
    pub(super) tracker: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) nodes: Vec<Node>,
    pub(super) by_id: BTreeMap<String, usize>,
    pub(super) t0: Instant,
    pub(super) rng: StdRng,
    /// Which side of the partition each node is on, once chosen.
    pub(super) side: Option<Vec<bool>>,
    pub(super) changes: Vec<Change>,
    /// Crashed nodes.
    pub(super) killed: Vec<usize>,
    pub(super) restarted: Vec<usize>,
    pub(super) restart_at: Option<Duration>,
    pub(super) joiners: Vec<usize>,
    pub(super) fig: SimFigures,
}

impl Sim<'_> {
    pub(super) fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub(super) fn config(&self, i: usize) -> Config {
        let node = &self.nodes[i];
        let mut argv: Vec<String> = vec![
            "--node-name".into(),
            node.name.clone(),
            "--store".into(),
            format!("/nonexistent/diskd-sim/{i}"),
            // Liveness is the failure detector's; a long expiry keeps "still live" writes out.
            "--peer-expiry".into(),
            "1h".into(),
            // Only the gossip switch reads the path; the keyring is built directly.
            "--key-file".into(),
            "/nonexistent/diskd-sim.key".into(),
            "--no-multicast".into(),
            "--gossip-advertise".into(),
            addr(i).to_string(),
        ];
        for s in &node.seeds {
            argv.extend(["--seed".into(), s.to_string()]);
        }
        let args = DaemonArgs::parse_from(&argv).expect("the simulation's flags parse");
        Config::load(None, None, &args).expect("the simulation's configuration is valid")
    }

    /// Start (or restart) node `i`'s peer layer.
    pub(super) fn start(&mut self, i: usize) {
        let config = self.config(i);
        let node = &mut self.nodes[i];
        node.runs += 1;
        let telemetry = Telemetry::default();
        let fleet = telemetry.fleet.subscribe();
        let local_changed = Arc::new(Notify::new());
        let (mount_tx, mount_rx) = mpsc::channel(8);
        let shutdown = self.shutdown.child_token();
        let mhub = self.mcast.clone();
        let wall = BASE_MS + self.t0.elapsed().as_millis() as u64;
        let handle = spawn_with(
            Deps {
                config: Arc::new(config),
                node: NodeInfo {
                    name: node.name.clone(),
                    id: node.id.clone(),
                    addr: Some(addr(i).ip().to_string()),
                },
                store: node.store.clone(),
                telemetry,
                local_changed: local_changed.clone(),
                mount_jobs: mount_tx,
                shutdown: shutdown.clone(),
            },
            &self.tracker,
            Keyring::from_keys(&[KEY]),
            Clock::following_tokio(wall),
            StdRng::seed_from_u64(
                self.o.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.runs,
            ),
            move |_| Ok(mhub.join(multicast_addr(i))),
            Some(GossipSetup {
                transport: self.net.bind(i, addr(i)),
                advertise: addr(i),
            }),
        );
        node.running = Some(Running {
            handle,
            shutdown,
            local_changed,
            fleet,
            _mount_jobs: mount_rx,
        });
        node.alive = true;
        self.net.set_alive(i, true);
        self.net.note(&format!("start {i}"));
    }

    /// Crash node `i`: nothing from or to it any more, and its layer stops (its goodbye
    /// goes nowhere).
    pub(super) fn crash(&mut self, i: usize) {
        self.net.set_alive(i, false);
        self.nodes[i].alive = false;
        if let Some(r) = self.nodes[i].running.take() {
            r.shutdown.cancel();
        }
        self.net.note(&format!("crash {i}"));
    }

    /// Read every running node's fleet events since the last look.
    pub(super) fn drain_events(&mut self) {
        let partitioned_ever = self.side.is_some();
        for i in 0..self.nodes.len() {
            let mut got = Vec::new();
            if let Some(r) = self.nodes[i].running.as_mut() {
                loop {
                    match r.fleet.try_recv() {
                        Ok(e) => got.push(e),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            self.fig.events_missed += n;
                        }
                        Err(_) => break,
                    }
                }
            }
            for e in got {
                let at = Duration::from_millis(e.time.saturating_sub(BASE_MS));
                let Some(&j) = self.by_id.get(&e.node_id) else {
                    continue;
                };
                match e.kind {
                    FleetEventKind::Appeared => {
                        let uuid = e.disk.as_ref().and_then(|d| d.uuid.as_deref());
                        for c in self.changes.iter_mut().filter(|c| c.node == j) {
                            if uuid == Some(c.uuid.as_str()) {
                                c.seen.entry(i).or_insert(at);
                            }
                        }
                    }
                    FleetEventKind::PeerLost => {
                        if self.restarted.contains(&j) || self.killed.contains(&j) {
                            // Its crash, told before or after it came back.
                        } else if self.nodes[j].alive {
                            // From the partition on, a live node declared down counts as
                            // the partition's: across it, or on the same side when its
                            // renewal after the heal (the other side declared it down)
                            // outlasted the goodbye grace.
                            if partitioned_ever {
                                self.fig.partition_down += 1;
                            } else {
                                self.fig.false_down += 1;
                                eprintln!(
                                    "sim: {:.2} s: node {i} declared live node {j} lost",
                                    at.as_secs_f64()
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Live nodes other than `j`.
    pub(super) fn live_others(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&i| i != j && self.nodes[i].alive)
    }

    /// Every live node's failure detector holds every other live node live.
    pub(super) fn views_complete(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.alive).count();
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .all(|n| member_gap(n, live) == 0)
    }
}

/// Live members missing from node `n`'s failure detector (as last published), when
/// `live` nodes are live in all.
pub(super) fn member_gap(n: &Node, live: usize) -> usize {
    let seen = n
        .running
        .as_ref()
        .and_then(|r| r.handle.status().gossip())
        .map_or(0, |g| g.members_live);
    (live - 1).saturating_sub(seen)
}
