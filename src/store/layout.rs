//! The v3 layout in sled: one value per host, postcard-encoded, split across keys when large.
//!
//! Tree `hosts`: key = node id + NUL + chunk number (u32, big endian); chunk 0 starts with
//! the number of chunks (u32, big endian), then the encoded [`StoredHost`] follows across
//! the chunks in order. A host is always rewritten as one sled batch (every chunk, and the
//! removal of chunks it no longer needs), so after a crash it is either its old or its new
//! value, never a mix.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{DiskRecord, Millis, Sighting};

/// Bytes of encoded host value per sled key (sled 0.34 keeps values this small inline in
/// its pages; larger ones would go to separate blob files).
pub(super) const CHUNK_BYTES: usize = 64 * 1024;

/// At most this many stays are kept per disk (per host, and in `history` answers).
pub const MAX_STAYS: usize = 64;

/// One host's inventory as stored: the place its latest inventory came from and every
/// disk it ever reported (present or not), each with its past stays.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredHost {
    pub host: String,
    pub addr: Option<String>,
    pub entries: Vec<StoredEntry>,
}

/// One (host, disk) sighting as stored.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredEntry {
    pub disk: DiskRecord,
    pub present: bool,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// When its latest stay (this host, this device) began.
    pub since: Millis,
    /// Keyed by identity + NUL + device (a second device with the same UUID).
    pub dup: bool,
    /// Host name and address when they differ from the host's (a disk that vanished
    /// before the host was renamed or moved keeps the place it was last seen at).
    pub place: Option<(String, Option<String>)>,
    /// Earlier stays on this host, oldest first.
    pub past: Vec<PastStay>,
}

/// A stay that ended: where the disk was, and from when to when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PastStay {
    pub host: String,
    pub addr: Option<String>,
    pub device: String,
    pub label: Option<String>,
    pub first_seen: Millis,
    pub last_seen: Millis,
}

/// A sighting in memory, with what the history needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its key within the host: the disk's identity, + NUL + device for a duplicate.
    pub key: String,
    pub s: Sighting,
    pub since: Millis,
    pub past: Vec<PastStay>,
}

/// One host's committed state, shared with readers (never changed once published).
#[derive(Debug)]
pub(super) struct HostState {
    pub node_id: Arc<str>,
    /// Name and address of its latest inventory.
    pub host: String,
    pub addr: Option<String>,
    /// Sorted by key.
    pub entries: Vec<Entry>,
    /// Index terms (see `term`), sorted, without duplicates.
    pub terms: Vec<u64>,
}

impl HostState {
    pub fn new(
        node_id: Arc<str>,
        host: String,
        addr: Option<String>,
        mut entries: Vec<Entry>,
    ) -> HostState {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let mut terms = Vec::with_capacity(entries.len() * 4 + 1);
        for e in &entries {
            let d = &e.s.disk;
            if let Some(u) = &d.uuid {
                terms.push(term(b'u', &u.to_ascii_lowercase()));
            }
            if let Some(l) = &d.label {
                terms.push(term(b'l', l));
            }
            terms.push(term(b'd', &d.device));
            terms.push(term(b'h', &e.s.host));
            for p in &e.past {
                if let Some(l) = &p.label {
                    terms.push(term(b'l', l));
                }
                terms.push(term(b'd', &p.device));
            }
        }
        terms.sort_unstable();
        terms.dedup();
        HostState {
            node_id,
            host,
            addr,
            entries,
            terms,
        }
    }

    /// The value to store, in chunks.
    pub fn encode(&self) -> Result<Vec<Vec<u8>>, postcard::Error> {
        let stored = StoredHost {
            host: self.host.clone(),
            addr: self.addr.clone(),
            entries: self
                .entries
                .iter()
                .map(|e| StoredEntry {
                    dup: e.key != e.s.disk.identity(),
                    place: (e.s.host != self.host || e.s.addr != self.addr)
                        .then(|| (e.s.host.clone(), e.s.addr.clone())),
                    disk: e.s.disk.clone(),
                    present: e.s.present,
                    first_seen: e.s.first_seen,
                    last_seen: e.s.last_seen,
                    since: e.since,
                    past: e.past.clone(),
                })
                .collect(),
        };
        let bytes = postcard::to_allocvec(&stored)?;
        Ok(split(&bytes))
    }

    /// A host from its stored chunks (in order); `None` when they do not make a value.
    pub fn decode(node_id: &str, chunks: &[sled::IVec]) -> Option<HostState> {
        let first = chunks.first()?;
        let n = u32::from_be_bytes(first.get(..4)?.try_into().ok()?) as usize;
        if n == 0 || chunks.len() < n {
            return None;
        }
        let mut bytes = Vec::with_capacity(n * CHUNK_BYTES);
        bytes.extend_from_slice(&first[4..]);
        for c in &chunks[1..n] {
            bytes.extend_from_slice(c);
        }
        let stored: StoredHost = postcard::from_bytes(&bytes).ok()?;
        let node_id: Arc<str> = Arc::from(node_id);
        let entries = stored
            .entries
            .into_iter()
            .map(|e| {
                let mut key = e.disk.identity();
                if e.dup {
                    key.push('\0');
                    key.push_str(&e.disk.device);
                }
                let (host, addr) = e
                    .place
                    .unwrap_or_else(|| (stored.host.clone(), stored.addr.clone()));
                Entry {
                    key,
                    s: Sighting {
                        node_id: node_id.to_string(),
                        host,
                        addr,
                        disk: e.disk,
                        present: e.present,
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                    },
                    since: e.since,
                    past: e.past,
                }
            })
            .collect();
        Some(HostState::new(node_id, stored.host, stored.addr, entries))
    }
}

/// Split an encoded value into chunks, the first one prefixed with their number.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let first_len = bytes.len().min(CHUNK_BYTES - 4);
    let rest = &bytes[first_len..];
    let n = 1 + rest.len().div_ceil(CHUNK_BYTES);
    let mut out = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(first_len + 4);
    first.extend_from_slice(&(n as u32).to_be_bytes());
    first.extend_from_slice(&bytes[..first_len]);
    out.push(first);
    out.extend(rest.chunks(CHUNK_BYTES).map(<[u8]>::to_vec));
    out
}

/// Key of chunk `i` of a host.
pub(super) fn chunk_key(node_id: &str, i: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(node_id.len() + 5);
    k.extend_from_slice(node_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// The node id and chunk number of a `hosts` key.
pub(super) fn parse_chunk_key(key: &[u8]) -> Option<(&str, u32)> {
    if key.len() < 6 || key[key.len() - 5] != 0 {
        return None;
    }
    let (id, rest) = key.split_at(key.len() - 5);
    let i = u32::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(id).ok()?, i))
}

/// An index term: `kind` (`u` UUID lower-cased, `l` label, `d` device, `h` host name) and
/// its text, hashed (FNV-1a). A collision only adds a candidate, which every reader checks
/// against the records themselves.
pub(super) fn term(kind: u8, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind).chain(text.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
