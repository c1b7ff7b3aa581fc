//! The simulation's network: unicast datagrams between sim nodes, in virtual time.
//!
//! A send draws the datagram's fate from the network's one seeded generator, in the order
//! sends happen (which the single-threaded, paused-clock runtime makes the same every
//! run): lost (`--loss`), cut by a partition or a dead end, or delivered after its link's
//! latency. Each link (sender, receiver) has its own latency, drawn once from the
//! configured range by a hash of the seed and the two ends, so a link delivers in order,
//! as a real path does. A delivered datagram waits in its receiver's queue, ordered by
//! (arrival time, send number), until the receiver's clock reaches its arrival.
//! Every send is folded into a digest of the whole run (`trace_digest`): one seed and the
//! same options give the same digest; any nondeterminism anywhere in the peer layers
//! changes some datagram's time, size or fate, and with it the digest.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diskd::peer::transport::Unicast;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A datagram on its way: arrival, send number (keeps equal arrivals in send order),
/// sender, bytes.
type InFlight = Reverse<(Instant, u64, SocketAddr, Vec<u8>)>;

struct Endpoint {
    /// Which node (for partitions and per-node byte counts).
    node: usize,
    queue: BinaryHeap<InFlight>,
    notify: Arc<Notify>,
    /// Bumped when the node's socket is replaced (a restart): the old socket's drop must
    /// not close the new one.
    socket: u64,
}

/// What happened to datagrams, for the figures.
#[derive(Debug, Clone, Default)]
pub struct NetCounts {
    /// Datagrams sent.
    pub sent: u64,
    /// Lost to `--loss`.
    pub lost: u64,
    /// Cut by the partition.
    pub partitioned: u64,
    /// To or from a dead node (or an address nobody has).
    pub dead: u64,
}

struct Net {
    rng: StdRng,
    /// Keys the links' latencies.
    link_seed: u64,
    latency: (Duration, Duration),
    /// Loss probability, 0..1.
    loss: f64,
    endpoints: HashMap<SocketAddr, Endpoint>,
    /// Per node: alive (sends and receives) or not.
    alive: Vec<bool>,
    /// Per node: which side of the partition, while one is on.
    side: Vec<bool>,
    partitioned: bool,
    /// Per node: bytes sent and received (UDP payload, as the layer's own counters).
    bytes_out: Vec<u64>,
    bytes_in: Vec<u64>,
    counts: NetCounts,
    next_socket: u64,
    trace: Sha256,
    origin: Instant,
}

/// The network. Cheap to clone; every clone is the same network.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<Net>>,
}

fn lock(m: &Mutex<Net>) -> std::sync::MutexGuard<'_, Net> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimNet {
    /// A network for `nodes` nodes, with its own generator seeded from `seed`.
    pub fn new(seed: u64, nodes: usize, latency: (Duration, Duration), loss: f64) -> SimNet {
        SimNet {
            inner: Arc::new(Mutex::new(Net {
                rng: StdRng::seed_from_u64(seed),
                link_seed: seed,
                latency,
                loss,
                endpoints: HashMap::new(),
                alive: vec![true; nodes],
                side: vec![false; nodes],
                partitioned: false,
                bytes_out: vec![0; nodes],
                bytes_in: vec![0; nodes],
                counts: NetCounts::default(),
                next_socket: 0,
                trace: Sha256::new(),
                origin: Instant::now(),
            })),
        }
    }

    /// Node `node`'s socket at `addr` (replacing an earlier one of the same address).
    pub fn bind(&self, node: usize, addr: SocketAddr) -> SimSocket {
        let mut net = lock(&self.inner);
        net.next_socket += 1;
        let socket = net.next_socket;
        let notify = Arc::new(Notify::new());
        net.endpoints.insert(
            addr,
            Endpoint {
                node,
                queue: BinaryHeap::new(),
                notify: notify.clone(),
                socket,
            },
        );
        SimSocket {
            net: self.clone(),
            addr,
            notify,
            socket,
        }
    }

    /// A node crashes (`false`: nothing from or to it any more, what was queued for it is
    /// lost) or comes back (`true`).
    pub fn set_alive(&self, node: usize, alive: bool) {
        let mut net = lock(&self.inner);
        net.alive[node] = alive;
        if !alive {
            for e in net.endpoints.values_mut().filter(|e| e.node == node) {
                e.queue.clear();
            }
        }
    }

    /// Cut the network between the nodes for which `side` is true and the others (`None`:
    /// heal).
    pub fn partition(&self, side: Option<Vec<bool>>) {
        let mut net = lock(&self.inner);
        match side {
            Some(s) => {
                net.side = s;
                net.partitioned = true;
            }
            None => net.partitioned = false,
        }
    }

    /// Bytes each node sent and received so far.
    pub fn bytes(&self) -> (Vec<u64>, Vec<u64>) {
        let net = lock(&self.inner);
        (net.bytes_out.clone(), net.bytes_in.clone())
    }

    /// What happened to datagrams so far.
    pub fn counts(&self) -> NetCounts {
        lock(&self.inner).counts.clone()
    }

    /// The digest of every send so far (time, sender, receiver, size, fate), as hex.
    pub fn digest(&self) -> String {
        let net = lock(&self.inner);
        hex(&net.trace.clone().finalize())
    }

    /// Fold an event of the simulation itself (a start, a change, a crash) into the digest.
    pub fn note(&self, what: &str) {
        let mut net = lock(&self.inner);
        let t = Instant::now().duration_since(net.origin).as_nanos() as u64;
        net.trace.update(t.to_le_bytes());
        net.trace.update(what.as_bytes());
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let mut net = lock(&self.inner);
        let net = &mut *net;
        let now = Instant::now();
        net.counts.sent += 1;
        let seq = net.counts.sent;
        let sender = net.endpoints.get(&from).map(|e| e.node);
        let receiver = net.endpoints.get(&to).map(|e| e.node);
        // Drawn for every datagram, whatever its fate, so that one fate does not shift the
        // draws of all later ones.
        let lost = net.rng.gen_bool(net.loss);
        let (lo, hi) = net.latency;
        let latency = match (sender, receiver) {
            (Some(s), Some(r)) if hi > lo => {
                let x = mix(net.link_seed ^ mix((s as u64) << 32 | r as u64));
                lo + Duration::from_nanos(x % ((hi - lo).as_nanos() as u64 + 1))
            }
            _ => lo,
        };
        if let Some(s) = sender {
            net.bytes_out[s] += bytes.len() as u64;
        }
        let fate = match (sender, receiver) {
            (Some(s), Some(r)) if net.alive[s] && net.alive[r] => {
                if net.partitioned && net.side[s] != net.side[r] {
                    net.counts.partitioned += 1;
                    b'p'
                } else if lost {
                    net.counts.lost += 1;
                    b'l'
                } else {
                    b'd'
                }
            }
            _ => {
                net.counts.dead += 1;
                b'x'
            }
        };
        let t = now.duration_since(net.origin).as_nanos() as u64;
        net.trace.update(t.to_le_bytes());
        net.trace
            .update((sender.unwrap_or(usize::MAX) as u64).to_le_bytes());
        net.trace
            .update((receiver.unwrap_or(usize::MAX) as u64).to_le_bytes());
        net.trace.update((bytes.len() as u32).to_le_bytes());
        net.trace.update([fate]);
        if fate != b'd' {
            return;
        }
        if let (Some(r), Some(e)) = (receiver, net.endpoints.get_mut(&to)) {
            net.bytes_in[r] += bytes.len() as u64;
            e.queue
                .push(Reverse((now + latency, seq, from, bytes.to_vec())));
            e.notify.notify_one();
        }
    }

    /// The next datagram for `addr` that has arrived by now, else when the next one will.
    fn take(
        &self,
        addr: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), Option<Instant>> {
        let mut net = lock(&self.inner);
        let Some(e) = net.endpoints.get_mut(&addr) else {
            return Err(None);
        };
        let now = Instant::now();
        match e.queue.peek() {
            Some(Reverse((at, ..))) if *at <= now => {}
            Some(Reverse((at, ..))) => return Err(Some(*at)),
            None => return Err(None),
        }
        let Some(Reverse((_, _, from, bytes))) = e.queue.pop() else {
            return Err(None);
        };
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok((n, from))
    }

    fn unbind(&self, addr: SocketAddr, socket: u64) {
        let mut net = lock(&self.inner);
        if net.endpoints.get(&addr).is_some_and(|e| e.socket == socket) {
            net.endpoints.remove(&addr);
        }
    }
}

/// One node's gossip socket on the [`SimNet`].
pub struct SimSocket {
    net: SimNet,
    addr: SocketAddr,
    notify: Arc<Notify>,
    socket: u64,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.net.unbind(self.addr, self.socket);
    }
}

impl Unicast for SimSocket {
    fn send_to(
        &self,
        to: SocketAddr,
        datagram: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.net.send(self.addr, to, datagram);
        std::future::ready(Ok(()))
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            // Registered before looking, so a send in between is not missed.
            let notified = self.notify.notified();
            match self.net.take(self.addr, buf) {
                Ok(got) => return Ok(got),
                Err(Some(at)) => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.net
            .take(self.addr, buf)
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// splitmix64's finaliser: spreads a link's ends and the seed over 64 bits (statistics,
/// not security).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, i], 32004))
    }

    #[tokio::test(start_paused = true)]
    async fn a_datagram_arrives_after_its_latency_and_a_dead_node_gets_nothing() {
        let ms = Duration::from_millis;
        let net = SimNet::new(1, 3, (ms(5), ms(5)), 0.0);
        let a = net.bind(0, addr(1));
        let b = net.bind(1, addr(2));
        let c = net.bind(2, addr(3));
        let t0 = Instant::now();
        a.send_to(addr(2), b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        assert!(b.try_recv(&mut buf).is_err(), "not before its latency");
        let (n, from) = b.recv(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], addr(1)));
        assert_eq!(Instant::now() - t0, ms(5));
        net.set_alive(2, false);
        a.send_to(addr(3), b"lost").await.unwrap();
        tokio::time::advance(ms(50)).await;
        assert!(c.try_recv(&mut buf).is_err());
        net.partition(Some(vec![true, false, false]));
        a.send_to(addr(2), b"cut").await.unwrap();
        tokio::time::advance(ms(50)).await;
        assert!(b.try_recv(&mut buf).is_err());
        let counts = net.counts();
        assert_eq!((counts.sent, counts.dead, counts.partitioned), (3, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_gives_the_same_digest() {
        let run = |seed| async move {
            let net = SimNet::new(
                seed,
                2,
                (Duration::from_micros(200), Duration::from_millis(2)),
                0.3,
            );
            let a = net.bind(0, addr(1));
            let _b = net.bind(1, addr(2));
            for i in 0..100u8 {
                a.send_to(addr(2), &[i; 10]).await.unwrap();
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            (net.digest(), net.counts().lost)
        };
        let (d1, lost1) = run(7).await;
        let (d2, lost2) = run(7).await;
        let (d3, _) = run(8).await;
        assert_eq!((d1.clone(), lost1), (d2, lost2));
        assert!(lost1 > 0);
        assert_ne!(d1, d3);
    }
}
