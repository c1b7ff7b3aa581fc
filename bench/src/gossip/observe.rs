//! What the gossip run watches in its nodes: members known, bytes sent, traffic by kind,
//! and whether a disk is present.

use super::*;

/// Every node's gossip bytes (in, out) as last published.
pub(super) fn gossip_bytes(nodes: &[SimNode]) -> Vec<(u64, u64)> {
    nodes
        .iter()
        .map(|n| {
            n.handle
                .status()
                .gossip()
                .map_or((0, 0), |g| (g.bytes_in, g.bytes_out))
        })
        .collect()
}

/// Every node's foca view holds every other node live (as last published).
pub(super) fn members_complete(nodes: &[SimNode], n: usize) -> bool {
    nodes.iter().all(|x| {
        x.handle
            .status()
            .gossip()
            .is_some_and(|g| g.members_live + 1 >= n)
    })
}

/// Live members in each node's foca view (as last published): min and mean.
pub(super) fn members_live(nodes: &[SimNode]) -> (usize, f64) {
    let live: Vec<usize> = nodes
        .iter()
        .map(|x| x.handle.status().gossip().map_or(0, |g| g.members_live))
        .collect();
    let min = live.iter().copied().min().unwrap_or(0);
    (
        min,
        live.iter().sum::<usize>() as f64 / live.len().max(1) as f64,
    )
}

/// Sleep `d`, noting when every node's foca view first held every other node live.
pub(super) fn watch_members(
    nodes: &[SimNode],
    n: usize,
    t0: Instant,
    at: &mut Option<Duration>,
    d: Duration,
) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if at.is_none() && members_complete(nodes, n) {
            *at = Some(t0.elapsed());
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
}

/// What the gossip traffic since `since` was made of, from the hub's log (its last
/// 16,384 datagrams, opened with the fleet's key): per kind, datagrams and bytes.
pub(super) fn traffic_mix(
    hub: &MemoryHub,
    since: tokio::time::Instant,
) -> Vec<(&'static str, u64, u64)> {
    let keys = Keyring::from_keys(&[KEY]);
    let mut mix: Vec<(&'static str, u64, u64)> = Vec::new();
    for sent in hub.sent().into_iter().filter(|s| s.at >= since) {
        let kind = match keys
            .open(&sent.bytes)
            .map(|(plain, _)| wire::decode(&plain))
        {
            Ok(Ok(env)) => match env.body {
                Body::Swim(_) => "swim",
                Body::Inventory(_) => "inventory",
                Body::Ping => "pull",
                Body::Goodbye => "goodbye",
                _ => "other",
            },
            _ => "undecodable",
        };
        match mix.iter_mut().find(|m| m.0 == kind) {
            Some(m) => {
                m.1 += 1;
                m.2 += sent.bytes.len() as u64;
            }
            None => mix.push((kind, 1, sent.bytes.len() as u64)),
        }
    }
    mix.sort_by_key(|m| std::cmp::Reverse(m.2));
    mix
}

pub(super) fn has_present(store: &Store, uuid: &str) -> bool {
    store
        .find(uuid)
        .map(|s| s.iter().any(|s| s.present))
        .unwrap_or(false)
}

pub(super) fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
