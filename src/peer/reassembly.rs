//! Putting chunked inventories back together, with bounded memory.
//!
//! One pending generation per peer; a newer generation (or a new boot) replaces it. A
//! generation that never completes is dropped after `PENDING_TIMEOUT`, and at most
//! `MAX_PENDING` peers may have one pending at a time (the oldest goes first), so lying
//! chunk counts or never-finished generations cannot grow memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{Chunk, Reject};
use crate::model::DiskRecord;

/// A generation not completed within this time is dropped.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Most peers with a generation in flight.
pub const MAX_PENDING: usize = 256;

struct Pending {
    boot: u64,
    generation: u64,
    count: u16,
    total: u32,
    parts: Vec<Option<Vec<DiskRecord>>>,
    received: u16,
    started: Instant,
}

/// The reassembly buffers of every peer.
#[derive(Default)]
pub struct Reassembly {
    pending: BTreeMap<String, Pending>,
}

impl Reassembly {
    /// Add a chunk from `node_id`; the whole inventory when this chunk completes it.
    pub fn add(
        &mut self,
        node_id: &str,
        boot: u64,
        chunk: Chunk,
        now: Instant,
    ) -> Result<Option<Vec<DiskRecord>>, Reject> {
        if chunk.count == 1 {
            self.pending.remove(node_id);
            if chunk.disks.len() as u32 != chunk.total {
                return Err(Reject::BadChunk);
            }
            return Ok(Some(chunk.disks));
        }
        let same = self
            .pending
            .get(node_id)
            .is_some_and(|p| p.boot == boot && p.generation == chunk.generation);
        if !same {
            if !self.pending.contains_key(node_id) && self.pending.len() >= MAX_PENDING {
                super::forget_oldest(&mut self.pending, |p| p.started);
            }
            self.pending.insert(
                node_id.to_string(),
                Pending {
                    boot,
                    generation: chunk.generation,
                    count: chunk.count,
                    total: chunk.total,
                    parts: vec![None; chunk.count as usize],
                    received: 0,
                    started: now,
                },
            );
        }
        let Some(p) = self.pending.get_mut(node_id) else {
            return Ok(None);
        };
        if p.count != chunk.count || p.total != chunk.total {
            return Err(Reject::BadChunk);
        }
        let slot = &mut p.parts[chunk.index as usize];
        match slot {
            Some(existing) if *existing == chunk.disks => return Ok(None),
            Some(_) => return Err(Reject::BadChunk),
            None => {
                *slot = Some(chunk.disks);
                p.received += 1;
            }
        }
        if p.received < p.count {
            return Ok(None);
        }
        let Some(p) = self.pending.remove(node_id) else {
            return Ok(None);
        };
        let disks: Vec<DiskRecord> = p.parts.into_iter().flatten().flatten().collect();
        if disks.len() as u32 != p.total {
            return Err(Reject::BadChunk);
        }
        Ok(Some(disks))
    }

    /// Drop generations older than `PENDING_TIMEOUT`; returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.duration_since(p.started) < PENDING_TIMEOUT);
        before - self.pending.len()
    }

    /// Generations in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(i: u32) -> DiskRecord {
        DiskRecord {
            probe: Default::default(),
            uuid: Some(format!("u{i}")),
            label: None,
            device: format!("/dev/d{i}"),
            fstype: None,
            mountpoints: vec![],
            hardware: Default::default(),
            health: None,
            fs: None,
        }
    }

    fn chunk(generation: u64, index: u16, count: u16, total: u32, ids: &[u32]) -> Chunk {
        Chunk {
            generation,
            index,
            count,
            total,
            disks: ids.iter().map(|&i| disk(i)).collect(),
        }
    }

    #[test]
    fn completes_in_any_order_and_ignores_exact_duplicates() {
        let mut r = Reassembly::default();
        let t = Instant::now();
        assert_eq!(r.add("a", 1, chunk(5, 2, 3, 5, &[5]), t), Ok(None));
        assert_eq!(r.add("a", 1, chunk(5, 0, 3, 5, &[1, 2]), t), Ok(None));
        assert_eq!(r.add("a", 1, chunk(5, 0, 3, 5, &[1, 2]), t), Ok(None));
        let all = r
            .add("a", 1, chunk(5, 1, 3, 5, &[3, 4]), t)
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 5);
        assert!(r.is_empty());
    }

    #[test]
    fn lies_are_rejected() {
        let mut r = Reassembly::default();
        let t = Instant::now();
        r.add("a", 1, chunk(5, 0, 2, 2, &[1]), t).unwrap();
        // Same generation, different count.
        assert_eq!(
            r.add("a", 1, chunk(5, 1, 3, 2, &[2]), t),
            Err(Reject::BadChunk)
        );
        // Duplicate index with other content.
        assert_eq!(
            r.add("a", 1, chunk(5, 0, 2, 2, &[9]), t),
            Err(Reject::BadChunk)
        );
        // Total that does not add up.
        assert_eq!(
            r.add("a", 1, chunk(5, 1, 2, 2, &[2, 3]), t),
            Err(Reject::BadChunk)
        );
        assert_eq!(
            r.add("b", 1, chunk(1, 0, 1, 3, &[1]), t),
            Err(Reject::BadChunk)
        );
    }

    #[test]
    fn incomplete_generations_are_replaced_or_expire() {
        let mut r = Reassembly::default();
        let t = Instant::now();
        r.add("a", 1, chunk(5, 0, 2, 2, &[1]), t).unwrap();
        // A newer generation replaces the pending one.
        r.add("a", 1, chunk(6, 0, 2, 2, &[1]), t).unwrap();
        assert_eq!(r.add("a", 1, chunk(5, 1, 2, 2, &[2]), t), Ok(None));
        assert_eq!(r.len(), 1);
        assert_eq!(r.expire(t + PENDING_TIMEOUT + Duration::from_millis(1)), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn pending_memory_is_capped() {
        let mut r = Reassembly::default();
        let t = Instant::now();
        for i in 0..(MAX_PENDING as u32 + 100) {
            r.add(&format!("peer{i}"), 1, chunk(1, 0, 1000, 1000, &[i]), t)
                .unwrap();
        }
        assert_eq!(r.len(), MAX_PENDING);
    }
}
