//! An in-process multicast group, so whole peer layers run in one test without root.
//!
//! A [`MemoryHub`] is the group; each [`MemoryTransport`] is one member with an address
//! and a bounded inbox. A send delivers the exact bytes to every member's inbox, the
//! sender's own included (real multicast loops back, and the layer must ignore its own
//! datagrams); a full inbox drops the datagram and counts it, as a UDP socket buffer would.
//! Tests can inject raw bytes (forged or replayed datagrams), cut members off, drop chosen
//! datagrams, and read the log of everything sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Transport, Unicast};

/// Datagrams a member's inbox holds before further ones are dropped.
pub const DEFAULT_INBOX: usize = 1024;
/// Sent datagrams remembered in the hub's log (oldest forgotten first).
const LOG: usize = 16_384;

/// Decides whether a datagram from `from` to `to` is lost (true: dropped).
pub type DropRule = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool + Send>;

/// One datagram as the hub saw it leave a member.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The sender.
    pub from: SocketAddr,
    /// When it was sent (tokio time, so paused time applies).
    pub at: Instant,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

struct Member {
    /// Which `join` this is (a rejoin replaces the member; the old handle's drop must not
    /// remove the new one).
    id: u64,
    inbox: VecDeque<(Vec<u8>, SocketAddr)>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Hub {
    members: HashMap<SocketAddr, Member>,
    next_id: u64,
    inbox_capacity: usize,
    isolated: HashSet<SocketAddr>,
    drop_rule: Option<DropRule>,
    dropped_full: u64,
    dropped_rule: u64,
    log: VecDeque<Sent>,
}

impl Hub {
    /// One datagram to one member (unicast), with the same loss rules as the group.
    fn deliver_to(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return;
        }
        if let Some(rule) = self.drop_rule.as_mut() {
            if rule(from, to, bytes) {
                self.dropped_rule += 1;
                return;
            }
        }
        let capacity = self.inbox_capacity;
        let Some(m) = self.members.get_mut(&to) else {
            return;
        };
        if m.inbox.len() >= capacity {
            self.dropped_full += 1;
            return;
        }
        m.inbox.push_back((bytes.to_vec(), from));
        m.notify.notify_one();
    }

    fn log(&mut self, from: SocketAddr, bytes: &[u8]) {
        if self.log.len() >= LOG {
            self.log.pop_front();
        }
        if !self.isolated.contains(&from) {
            self.log.push_back(Sent {
                from,
                at: Instant::now(),
                bytes: bytes.to_vec(),
            });
        }
    }

    /// One datagram to every member that is not cut off (multicast), each as `deliver_to`.
    fn deliver(&mut self, from: SocketAddr, bytes: &[u8]) {
        if self.isolated.contains(&from) {
            return;
        }
        let targets: Vec<SocketAddr> = self
            .members
            .keys()
            .filter(|a| !self.isolated.contains(a))
            .copied()
            .collect();
        for to in targets {
            self.deliver_to(from, to, bytes);
        }
    }
}

/// The group. Cheap to clone; every clone is the same group.
#[derive(Clone)]
pub struct MemoryHub {
    inner: Arc<Mutex<Hub>>,
}

impl Default for MemoryHub {
    fn default() -> Self {
        MemoryHub::new(DEFAULT_INBOX)
    }
}

impl MemoryHub {
    /// A group whose members' inboxes hold `inbox_capacity` datagrams each.
    pub fn new(inbox_capacity: usize) -> MemoryHub {
        MemoryHub {
            inner: Arc::new(Mutex::new(Hub {
                inbox_capacity,
                ..Hub::default()
            })),
        }
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the group as `addr` (replacing an earlier member with that address, as a
    /// reopened socket would). Leaves when the transport is dropped.
    pub fn join(&self, addr: SocketAddr) -> MemoryTransport {
        let mut hub = self.hub();
        hub.next_id += 1;
        let id = hub.next_id;
        let notify = Arc::new(Notify::new());
        hub.members.insert(
            addr,
            Member {
                id,
                inbox: VecDeque::new(),
                notify: notify.clone(),
            },
        );
        MemoryTransport {
            hub: self.clone(),
            addr,
            id,
            notify,
            describe: format!("memory {addr}"),
        }
    }

    /// Deliver raw bytes as if `from` had sent them (forged, replayed or foreign traffic).
    pub fn inject(&self, from: SocketAddr, bytes: &[u8]) {
        self.hub().deliver(from, bytes);
    }

    /// Cut `addr` off (it neither sends nor receives) or reconnect it.
    pub fn isolate(&self, addr: SocketAddr, cut: bool) {
        let mut hub = self.hub();
        if cut {
            hub.isolated.insert(addr);
        } else {
            hub.isolated.remove(&addr);
        }
    }

    /// Lose every datagram for which `rule(from, to, bytes)` is true (until replaced).
    pub fn set_drop_rule(&self, rule: Option<DropRule>) {
        self.hub().drop_rule = rule;
    }

    /// Datagrams dropped because an inbox was full.
    pub fn dropped_full(&self) -> u64 {
        self.hub().dropped_full
    }

    /// Datagrams dropped by the drop rule.
    pub fn dropped_by_rule(&self) -> u64 {
        self.hub().dropped_rule
    }

    /// Every datagram sent by members so far (the latest `LOG`), oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        self.hub().log.iter().cloned().collect()
    }

    /// Datagrams waiting in `addr`'s inbox.
    pub fn queued(&self, addr: SocketAddr) -> usize {
        self.hub().members.get(&addr).map_or(0, |m| m.inbox.len())
    }
}

/// One member of a [`MemoryHub`].
pub struct MemoryTransport {
    hub: MemoryHub,
    addr: SocketAddr,
    id: u64,
    notify: Arc<Notify>,
    describe: String,
}

impl MemoryTransport {
    /// This member's address (what receivers see as the sender).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn pop(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut hub = self.hub.hub();
        let m = hub.members.get_mut(&self.addr)?;
        if m.id != self.id {
            return None;
        }
        m.inbox.pop_front()
    }

    fn copy(datagram: (Vec<u8>, SocketAddr), buf: &mut [u8]) -> (usize, SocketAddr) {
        // As recv_from: a datagram longer than the buffer is truncated.
        let (bytes, from) = datagram;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        (n, from)
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut hub = self.hub.hub();
        if hub.members.get(&self.addr).is_some_and(|m| m.id == self.id) {
            hub.members.remove(&self.addr);
        }
    }
}

impl Transport for MemoryTransport {
    fn send(&self, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        let mut hub = self.hub.hub();
        hub.log(self.addr, datagram);
        hub.deliver(self.addr, datagram);
        std::future::ready(Ok(()))
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            // `notify_one` stores a permit when nobody waits, so a datagram delivered
            // between the check and the wait is not missed.
            if let Some(d) = self.pop() {
                return Ok(Self::copy(d, buf));
            }
            self.notify.notified().await;
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.pop() {
            Some(d) => Ok(Self::copy(d, buf)),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn describe(&self) -> &str {
        &self.describe
    }
}

/// A member used as a unicast endpoint (gossip), reached by its address. Use a hub of its
/// own for gossip, as gossip has a port of its own.
pub struct MemoryUnicast(MemoryTransport);

impl MemoryHub {
    /// Join as a unicast endpoint at `addr`.
    pub fn join_unicast(&self, addr: SocketAddr) -> MemoryUnicast {
        MemoryUnicast(self.join(addr))
    }
}

impl Unicast for MemoryUnicast {
    fn send_to(
        &self,
        to: SocketAddr,
        datagram: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send {
        let mut hub = self.0.hub.hub();
        hub.log(self.0.addr, datagram);
        hub.deliver_to(self.0.addr, to, datagram);
        std::future::ready(Ok(()))
    }

    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        Transport::recv(&self.0, buf)
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Transport::try_recv(&self.0, buf)
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, n], 32003))
    }

    #[tokio::test]
    async fn delivers_to_everyone_including_the_sender() {
        let hub = MemoryHub::default();
        let a = hub.join(addr(1));
        let b = hub.join(addr(2));
        a.send(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(b.recv(&mut buf).await.unwrap(), (5, addr(1)));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(a.try_recv(&mut buf).unwrap(), (5, addr(1)));
        assert_eq!(
            b.try_recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(hub.sent().len(), 1);
    }

    #[tokio::test]
    async fn full_inboxes_drop_and_count() {
        let hub = MemoryHub::new(2);
        let a = hub.join(addr(1));
        let _b = hub.join(addr(2));
        for _ in 0..3 {
            a.send(b"x").await.unwrap();
        }
        assert_eq!(hub.queued(addr(2)), 2);
        assert_eq!(hub.dropped_full(), 2, "one for a's inbox, one for b's");
    }

    #[tokio::test]
    async fn isolation_drop_rules_and_leaving() {
        let hub = MemoryHub::default();
        let a = hub.join(addr(1));
        let b = hub.join(addr(2));
        hub.isolate(addr(2), true);
        a.send(b"1").await.unwrap();
        b.send(b"2").await.unwrap();
        assert_eq!(hub.queued(addr(2)), 0);
        assert_eq!(hub.queued(addr(1)), 1, "only a's own datagram");
        hub.isolate(addr(2), false);
        hub.set_drop_rule(Some(Box::new(|_, to, _| to == addr(2))));
        a.send(b"3").await.unwrap();
        assert_eq!(hub.queued(addr(2)), 0);
        assert_eq!(hub.dropped_by_rule(), 1);
        hub.set_drop_rule(None);
        // A rejoin replaces the member; dropping the old handle leaves the new one.
        let b2 = hub.join(addr(2));
        drop(b);
        hub.inject(addr(9), b"4");
        let mut buf = [0u8; 4];
        assert_eq!(b2.try_recv(&mut buf).unwrap(), (1, addr(9)));
        drop(b2);
        hub.inject(addr(9), b"5");
        assert_eq!(hub.queued(addr(2)), 0);
    }
}
