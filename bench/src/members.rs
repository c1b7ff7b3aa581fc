//! The simulated hosts of `diskd-bench scale --gossip`: gossip members of the daemon under
//! test instead of multicast announcers.
//!
//! Each simulated host is a member with a UDP port, a node id and a run of its own, its
//! datagrams sealed with the fleet key. It is a SWIM responder, not a whole peer layer: it
//! joins with an announce to the daemon, answers the daemon's probes (a ping with an ack;
//! a ping-request about another simulated member with the forwarded ack that member's
//! answer would have become), pushes its inventory when it joins and when it changes, and
//! answers pulls. It keeps no member list: the daemon's updates about other members are
//! read past. A real peer layer per simulated host would hold every other member (10^8
//! entries at 10,000 hosts) while the daemon under test is what is measured.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskd::model::DiskRecord;
use diskd::peer::gossip::MemberId;
use diskd::peer::keys::Keyring;
use diskd::peer::wire::{self, Body, Envelope, Swim};
use foca::{Codec, Header, Message, PostcardCodec};
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

use crate::scale::{peer_id, sim_disk, SimOptions};

/// First UDP port of the simulated members (member p listens on `PORT_BASE + p`).
const PORT_BASE: u16 = 20_000;
/// How often a member the daemon has not spoken to yet announces itself again.
const REJOIN_EVERY: Duration = Duration::from_secs(3);

/// One simulated member: who it is, and what it has announced.
struct Member {
    /// Its identity; the run (`bump`) grows when the daemon declared it down.
    id: Mutex<MemberId>,
    /// The daemon has spoken to this identity (it is a member); until then it announces
    /// itself again every `REJOIN_EVERY`, as a real joiner keeps asking its seeds.
    joined: std::sync::atomic::AtomicBool,
    node_id: String,
    node: String,
    boot: u64,
    /// Datagrams sent (the envelope's sequence number: one destination, so dense).
    seq: AtomicU64,
    /// Its inventory and the generation it was announced as.
    inventory: Mutex<(u64, Vec<DiskRecord>)>,
}

/// What every member's task shares.
struct Fleet {
    members: Vec<Member>,
    keys: Keyring,
    sockets: Vec<Arc<UdpSocket>>,
    /// Between two inventory datagrams (the rate `--rate` sets), and when the next may go.
    gap: Duration,
    next: Mutex<Instant>,
}

impl Fleet {
    /// Seal and send one message of member `p`.
    async fn send(&self, p: usize, to: SocketAddr, body: Body) {
        let m = &self.members[p];
        let env = Envelope {
            node_id: m.node_id.clone(),
            node: m.node.clone(),
            boot: m.boot,
            seq: m.seq.fetch_add(1, Ordering::Relaxed) + 1,
            sent_ms: diskd::model::now_millis(),
            body,
        };
        let _ = self.sockets[p]
            .send_to(&self.keys.seal(wire::encode(&env)), to)
            .await;
    }

    /// A SWIM packet from member `p`: `message` for `dst`, without updates.
    async fn swim(&self, p: usize, dst: MemberId, message: Message<MemberId>) {
        let m = &self.members[p];
        let header = Header {
            src: lock(&m.id).clone(),
            src_incarnation: 0,
            dst: dst.clone(),
            message,
        };
        let mut data = Vec::new();
        if PostcardCodec.encode_header(&header, &mut data).is_err() {
            return;
        }
        let generation = lock(&m.inventory).0;
        self.send(p, dst.addr, Body::Swim(Swim { generation, data }))
            .await;
    }

    /// Member `p`'s whole inventory to `to`, in chunks, paced; returns the datagrams and
    /// records sent.
    async fn push(&self, p: usize, to: SocketAddr) -> (u64, u64) {
        let (generation, disks) = lock(&self.members[p].inventory).clone();
        let m = &self.members[p];
        let template = Envelope {
            node_id: m.node_id.clone(),
            node: m.node.clone(),
            boot: m.boot,
            seq: 0,
            sent_ms: 0,
            body: Body::Ping,
        };
        let (mut datagrams, mut records) = (0, 0);
        for chunk in wire::chunk_inventory(&template, generation, &disks, 1400) {
            records += chunk.disks.len() as u64;
            datagrams += 1;
            self.pace().await;
            self.send(p, to, Body::Inventory(chunk)).await;
        }
        (datagrams, records)
    }

    /// Wait for the next datagram's turn at `--rate` (in steps of a few ms: a timer does
    /// not wait 50 µs).
    async fn pace(&self) {
        let wait = {
            let mut next = lock(&self.next);
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.gap;
            at - now
        };
        if wait >= Duration::from_millis(2) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Answer what the daemon sends member `p`, until the process ends.
    async fn serve(self: Arc<Self>, p: usize) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = self.sockets[p].recv_from(&mut buf).await else {
                continue;
            };
            let Ok((plain, _)) = self.keys.open(&buf[..n]) else {
                continue;
            };
            let Ok(env) = wire::decode(&plain) else {
                continue;
            };
            match env.body {
                Body::Swim(s) => self.answer_swim(p, &s.data).await,
                // A unicast ping is a pull of our inventory: answered by a task of its own,
                // as the push waits for its turn at `--rate` and probes must not.
                Body::Ping => {
                    let fleet = self.clone();
                    tokio::spawn(async move { fleet.push(p, from).await });
                }
                // The daemon's own inventory (one copy per member that comes up), its
                // member pages, goodbyes: nothing to answer.
                _ => {}
            }
        }
    }

    async fn answer_swim(&self, p: usize, data: &[u8]) {
        // Only the header: the updates about other members behind it are read past.
        let Ok(header) = PostcardCodec.decode_header(data) else {
            return;
        };
        let m = &self.members[p];
        if header.dst != *lock(&m.id) {
            return; // for a run of ours the daemon declared down
        }
        m.joined.store(true, Ordering::Relaxed);
        let reply = match header.message {
            Message::Ping(n) => Message::Ack(n),
            // "Probe member `target` for me": when `target` is one of ours as it is now (not
            // a run the daemon declared down), the answer it would give comes back
            // forwarded at once.
            Message::PingReq {
                target,
                probe_number,
            } if self.is_current(&target) => Message::ForwardedAck {
                origin: target,
                probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => Message::IndirectAck {
                target: origin,
                probe_number,
            },
            Message::Announce => Message::Feed,
            // Declared down (a probe went unanswered while this process was busy): as a
            // real member does (`MemberId::renew`), rejoin under a newer run, announced by
            // `rejoin`.
            Message::TurnUndead => {
                lock(&m.id).bump += 1;
                m.joined.store(false, Ordering::Relaxed);
                return;
            }
            _ => return,
        };
        self.swim(p, header.src, reply).await;
    }
}

impl Fleet {
    /// Whether `id` is one of the simulated members, in its current run.
    fn is_current(&self, id: &MemberId) -> bool {
        let p = usize::from(id.addr.port().wrapping_sub(PORT_BASE));
        self.members.get(p).is_some_and(|m| *lock(&m.id) == *id)
    }

    /// Announce again, every `REJOIN_EVERY`, each member the daemon has not spoken to yet
    /// (its first announce was lost, or it was declared down and renewed its run).
    async fn rejoin(self: Arc<Self>, daemon: SocketAddr) {
        let seed = MemberId::seed(daemon);
        loop {
            tokio::time::sleep(REJOIN_EVERY).await;
            for p in 0..self.members.len() {
                if !self.members[p].joined.load(Ordering::Relaxed) {
                    self.pace().await;
                    self.swim(p, seed.clone(), Message::Announce).await;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the simulated members: `o.peers` members on `bind`, joining the daemon at `daemon`
/// with the key in `key`; wave by wave as `scale::simulate` does (churn moves disks and
/// sends goodbyes), printing `wave N DATAGRAMS RECORDS MS`. A member announces its
/// inventory only when it joins, changes or returns (gossip has no periodic announce).
/// Then it keeps answering the daemon until killed.
pub fn simulate(o: &SimOptions) {
    let (Some(daemon), Some(key), Some(bind)) = (o.daemon, o.key.as_ref(), o.bind) else {
        eprintln!("simulate --gossip needs --daemon, --key and --bind");
        std::process::exit(2);
    };
    let keys = Keyring::load(std::slice::from_ref(key)).expect("fleet key");
    // One socket per member: past the default limit of open files.
    let want = o.peers as u64 + 256;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, want)
        .expect("raise the open files limit");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(o, keys, daemon, bind));
}

async fn run(o: &SimOptions, keys: Keyring, daemon: SocketAddr, bind: IpAddr) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut sockets = Vec::with_capacity(o.peers);
    let mut members = Vec::with_capacity(o.peers);
    let started = diskd::model::now_millis();
    for p in 0..o.peers {
        let port = PORT_BASE + u16::try_from(p).expect("at most 45,000 members");
        let addr = SocketAddr::new(bind, port);
        sockets.push(Arc::new(UdpSocket::bind(addr).await.expect("bind member")));
        members.push(Member {
            id: Mutex::new(MemberId {
                node: u128::from_str_radix(&peer_id(p), 16).expect("node id"),
                addr,
                bump: started,
            }),
            joined: std::sync::atomic::AtomicBool::new(false),
            node_id: peer_id(p),
            node: format!("sim-{p:04}"),
            boot: rng.gen(),
            seq: AtomicU64::new(0),
            inventory: Mutex::new((1, (0..o.disks).map(|d| sim_disk(p, d)).collect())),
        });
    }
    let fleet = Arc::new(Fleet {
        members,
        keys,
        sockets,
        gap: Duration::from_secs_f64(1.0 / o.rate as f64),
        next: Mutex::new(Instant::now()),
    });
    for p in 0..o.peers {
        tokio::spawn(fleet.clone().serve(p));
    }
    tokio::spawn(fleet.clone().rejoin(daemon));
    let seed = MemberId::seed(daemon);
    let mut gone: HashSet<usize> = HashSet::new();
    for wave in 0..o.waves {
        let start = Instant::now();
        let (mut datagrams, mut records) = (0u64, 0u64);
        // Who sends this wave: everyone at first; then the members whose inventory
        // changed and those back from a goodbye.
        let mut senders: Vec<usize> = if wave == 0 {
            (0..o.peers).collect()
        } else {
            gone.drain().collect()
        };
        if wave > 0 {
            let moves = ((o.peers as f64) * o.churn).ceil() as usize;
            for _ in 0..moves {
                let from = rng.gen_range(0..o.peers);
                let to = rng.gen_range(0..o.peers);
                if from == to {
                    continue;
                }
                let disk = {
                    let mut inv = lock(&fleet.members[from].inventory);
                    if inv.1.is_empty() {
                        continue;
                    }
                    inv.0 += 1;
                    inv.1.remove(0)
                };
                let mut inv = lock(&fleet.members[to].inventory);
                inv.0 += 1;
                inv.1.push(disk);
                senders.extend([from, to]);
            }
            for _ in 0..((o.peers as f64) * o.churn).ceil() as usize {
                gone.insert(rng.gen_range(0..o.peers));
            }
        }
        senders.sort_unstable();
        senders.dedup();
        for p in senders {
            if gone.contains(&p) {
                continue;
            }
            if wave == 0 {
                fleet.swim(p, seed.clone(), Message::Announce).await;
                datagrams += 1;
            }
            let (d, r) = fleet.push(p, daemon).await;
            datagrams += d;
            records += r;
        }
        for &p in &gone {
            fleet.send(p, daemon, Body::Goodbye).await;
            datagrams += 1;
        }
        println!(
            "wave {wave} {datagrams} {records} {}",
            start.elapsed().as_millis()
        );
        let period = Duration::from_secs(o.interval);
        if let Some(rest) = period.checked_sub(start.elapsed()) {
            if wave + 1 < o.waves {
                tokio::time::sleep(rest).await;
            }
        }
    }
    println!("waves done");
    // Members keep answering probes and pulls until `scale` ends this process.
    std::future::pending::<()>().await;
}
