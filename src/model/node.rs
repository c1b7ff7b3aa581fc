//! Who this node is: its name, permanent id and the addresses peers can reach it at.

use std::net::IpAddr;

use serde::Serialize;

/// Who this node is.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Permanent node id.
    pub id: String,
    /// The address peers reach us at (the first non-loopback address), if any.
    pub addr: Option<String>,
}

impl NodeInfo {
    /// Our identity, with the first non-loopback address (IPv4 preferred) as the address
    /// other machines would use to reach our disks.
    pub fn new(name: &str, id: &str) -> NodeInfo {
        let addrs = addresses();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .map(IpAddr::to_string);
        NodeInfo {
            name: name.to_string(),
            id: id.to_string(),
            addr,
        }
    }
}

/// Every non-loopback, non-link-local address of this machine's interfaces.
pub fn addresses() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for ifa in ifaddrs {
        let Some(sa) = ifa.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
