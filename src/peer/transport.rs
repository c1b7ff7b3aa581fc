//! The multicast sockets (socket2 + tokio), IPv4 and IPv6.
//!
//! Two sockets: one bound to the group and port (SO_REUSEADDR/SO_REUSEPORT, so several
//! daemons and the Perl diskd share the port; bound to the group so it receives nothing
//! else), and one unbound for sending with the configured interface and TTL. Loopback is on:
//! daemons on the same machine hear each other; our own datagrams are recognised by node id.
//!
//! The layer reaches the network only through the [`Transport`] trait, so the whole layer
//! also runs in-process on a [`memory::MemoryHub`] (unit tests, simulations).

pub mod memory;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use crate::config::Multicast;

/// Receive buffer asked for: a wave from 1,000 peers is about 8,000 datagrams, which take
/// about 2.5 KiB of buffer each in the kernel's accounting.
const RECV_BUFFER: usize = 32 << 20;

/// A datagram network the peer layer can run on: every datagram sent reaches every member
/// of the group (the sender included, as multicast loops back), at most once, maybe not.
pub trait Transport: Send + Sync {
    /// Send one datagram to the group.
    fn send(&self, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Receive one datagram; returns its length and sender address.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// Receive a datagram only if one is waiting now (`WouldBlock` otherwise), to drain a
    /// burst before flushing.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Human description for logs and `status`.
    fn describe(&self) -> &str;
}

/// A unicast datagram endpoint (gossip): send to one address, receive from anyone.
pub trait Unicast: Send + Sync {
    /// Send one datagram to `to`.
    fn send_to(
        &self,
        to: SocketAddr,
        datagram: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Receive one datagram; returns its length and sender address.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// Receive a datagram only if one is waiting now (`WouldBlock` otherwise).
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// The address it is bound to.
    fn local_addr(&self) -> SocketAddr;
}

/// The gossip socket: one UDP socket bound to `gossip.listen`.
pub struct UdpUnicast {
    socket: UdpSocket,
    local: SocketAddr,
}

impl UdpUnicast {
    /// Bind (errors name the address: a port in use is a configuration problem).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpUnicast> {
        let domain = if addr.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false).ok();
        }
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = s.set_recv_buffer_size(RECV_BUFFER / 4);
        s.set_nonblocking(true)?;
        s.bind(&SockAddr::from(addr))
            .map_err(|e| io::Error::new(e.kind(), format!("gossip.listen {addr}: {e}")))?;
        let socket = UdpSocket::from_std(s.into())?;
        let local = socket.local_addr()?;
        Ok(UdpUnicast { socket, local })
    }
}

impl Unicast for UdpUnicast {
    async fn send_to(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.socket.send_to(datagram, to).await.map(|_| ())
    }
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.socket.recv_from(buf)
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.try_recv_from(buf)
    }
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// The address other members reach our gossip socket at, when `gossip.advertise` does
/// not say: the address of `multicast.interface`, else a specific listen address, else the
/// source address of the route to the first seed, else our first non-loopback address.
pub async fn advertise_address(cfg: &crate::config::Config, listen: SocketAddr) -> SocketAddr {
    let port = listen.port();
    if let Some(a) = cfg.gossip.advertise {
        return a;
    }
    if let Some(spec) = &cfg.multicast.interface {
        if let Ok(Iface { v4: Some(ip), .. }) = resolve_interface(spec) {
            if listen.is_ipv4() {
                return SocketAddr::new(IpAddr::V4(ip), port);
            }
        }
    }
    if !listen.ip().is_unspecified() {
        return listen;
    }
    if let Some(seed) = cfg.gossip.seeds.first() {
        let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
        if let Ok(Ok(mut addrs)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await
        {
            if let Some(to) = addrs.find(|a| a.is_ipv4() == listen.is_ipv4()) {
                let any: SocketAddr = if to.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                if let Ok(s) = std::net::UdpSocket::bind(any) {
                    // A connected UDP socket sends nothing; it only picks the route.
                    if s.connect(to).is_ok() {
                        if let Ok(local) = s.local_addr() {
                            return SocketAddr::new(local.ip(), port);
                        }
                    }
                }
            }
        }
    }
    super::gossip::fallback_advertise(&crate::model::addresses(), port)
}

/// No multicast at all (`multicast.enabled: false`): nothing arrives; the layer does not
/// send on it.
pub struct NoMulticast;

impl Transport for NoMulticast {
    fn send(&self, _datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
    fn recv(
        &self,
        _buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        std::future::pending()
    }
    fn try_recv(&self, _buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn describe(&self) -> &str {
        "multicast off"
    }
}

/// The multicast sockets, or none when multicast is turned off.
pub enum AnyMulticast {
    /// Multicast on.
    On(MulticastTransport),
    /// `multicast.enabled: false`.
    Off(NoMulticast),
}

impl AnyMulticast {
    /// Open per the configuration.
    pub fn open(cfg: &Multicast) -> io::Result<AnyMulticast> {
        if cfg.enabled {
            MulticastTransport::open(cfg).map(AnyMulticast::On)
        } else {
            Ok(AnyMulticast::Off(NoMulticast))
        }
    }
}

impl Transport for AnyMulticast {
    async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        match self {
            AnyMulticast::On(t) => t.send(datagram).await,
            AnyMulticast::Off(t) => Transport::send(t, datagram).await,
        }
    }
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            AnyMulticast::On(t) => t.recv(buf).await,
            AnyMulticast::Off(t) => Transport::recv(t, buf).await,
        }
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            AnyMulticast::On(t) => t.try_recv(buf),
            AnyMulticast::Off(t) => Transport::try_recv(t, buf),
        }
    }
    fn describe(&self) -> &str {
        match self {
            AnyMulticast::On(t) => &t.describe,
            AnyMulticast::Off(t) => Transport::describe(t),
        }
    }
}

/// The pair of sockets of the peer layer.
pub struct MulticastTransport {
    recv: UdpSocket,
    send: UdpSocket,
    group: SocketAddr,
    /// Human description for logs and `status`.
    pub describe: String,
}

/// An interface as configured: by name or by one of its addresses.
struct Iface {
    index: u32,
    v4: Option<Ipv4Addr>,
}

fn resolve_interface(spec: &str) -> io::Result<Iface> {
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("multicast.interface {spec:?}: no such interface or address"),
        )
    };
    let by_addr: Option<IpAddr> = spec.parse().ok();
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    let mut name: Option<String> = None;
    let mut v4: Option<Ipv4Addr> = None;
    for ifa in addrs {
        let ip = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        let matches = match by_addr {
            Some(want) => ip == Some(want),
            None => ifa.interface_name == spec,
        };
        if matches {
            name = Some(ifa.interface_name.clone());
        }
        if name.as_deref() == Some(ifa.interface_name.as_str()) || ifa.interface_name == spec {
            if let Some(IpAddr::V4(a)) = ip {
                if by_addr.is_none() || by_addr == Some(IpAddr::V4(a)) || v4.is_none() {
                    v4 = Some(a);
                }
            }
        }
    }
    let name = name.ok_or_else(not_found)?;
    let index = nix::net::if_::if_nametoindex(name.as_str()).map_err(|_| not_found())?;
    Ok(Iface { index, v4 })
}

impl MulticastTransport {
    /// Open and join. Errors name what failed (interface gone, group refused, ...).
    pub fn open(cfg: &Multicast) -> io::Result<MulticastTransport> {
        let iface = match &cfg.interface {
            Some(spec) => Some(resolve_interface(spec)?),
            None => None,
        };
        let group = SocketAddr::new(cfg.group, cfg.port);
        let (recv, send) = match cfg.group {
            IpAddr::V4(g) => open_v4(g, cfg, iface.as_ref())?,
            IpAddr::V6(g) => open_v6(g, cfg, iface.as_ref())?,
        };
        let describe = format!(
            "{group} ttl {} on {}",
            cfg.ttl,
            cfg.interface.as_deref().unwrap_or("the default interface")
        );
        Ok(MulticastTransport {
            recv: UdpSocket::from_std(recv.into())?,
            send: UdpSocket::from_std(send.into())?,
            group,
            describe,
        })
    }

    /// Send one datagram to the group.
    pub async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.send.send_to(datagram, self.group).await.map(|_| ())
    }

    /// Receive a datagram only if one is waiting now (to drain a burst before flushing).
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv.try_recv_from(buf)
    }

    /// Receive one datagram; returns its length and sender address.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv.recv_from(buf).await
    }
}

impl Transport for MulticastTransport {
    fn send(&self, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        MulticastTransport::send(self, datagram)
    }
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        MulticastTransport::recv(self, buf)
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        MulticastTransport::try_recv(self, buf)
    }
    fn describe(&self) -> &str {
        &self.describe
    }
}

fn shared_socket(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Room for a wave of announces from a large fleet. As root, SO_RCVBUFFORCE goes past
    // net.core.rmem_max; otherwise the kernel caps the request at rmem_max. Best effort:
    // the default still works for small fleets.
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &RECV_BUFFER)
        .is_err()
    {
        let _ = s.set_recv_buffer_size(RECV_BUFFER);
    }
    Ok(s)
}

fn open_v4(
    group: Ipv4Addr,
    cfg: &Multicast,
    iface: Option<&Iface>,
) -> io::Result<(Socket, Socket)> {
    let recv = shared_socket(Domain::IPV4)?;
    recv.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V4(group),
        cfg.port,
    )))?;
    let join_on = match iface {
        Some(i) => InterfaceIndexOrAddress::Index(i.index),
        None => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
    };
    recv.join_multicast_v4_n(&group, &join_on)?;

    let send = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    send.set_nonblocking(true)?;
    send.set_multicast_ttl_v4(cfg.ttl)?;
    send.set_multicast_loop_v4(true)?;
    if let Some(i) = iface {
        let addr = i.v4.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "multicast.interface has no IPv4 address",
            )
        })?;
        send.set_multicast_if_v4(&addr)?;
    }
    send.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
    )))?;
    Ok((recv, send))
}

fn open_v6(
    group: Ipv6Addr,
    cfg: &Multicast,
    iface: Option<&Iface>,
) -> io::Result<(Socket, Socket)> {
    let index = iface.map(|i| i.index).unwrap_or(0);
    let recv = shared_socket(Domain::IPV6)?;
    recv.set_only_v6(true)?;
    recv.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V6(group),
        cfg.port,
    )))?;
    recv.join_multicast_v6(&group, index)?;

    let send = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    send.set_nonblocking(true)?;
    send.set_only_v6(true)?;
    send.set_multicast_hops_v6(cfg.ttl)?;
    send.set_multicast_loop_v6(true)?;
    if index != 0 {
        send.set_multicast_if_v6(index)?;
    }
    send.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        0,
    )))?;
    Ok((recv, send))
}
