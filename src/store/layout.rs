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

/// Disks no longer attached that are kept per host (their last known location and
/// history); past it the ones seen longest ago are forgotten.
pub const MAX_ABSENT_PER_HOST: usize = 4096;

/// One host's inventory as stored: the place its latest inventory came from and every
/// disk it ever reported (present or not), each with its past stays.
///
/// Text is borrowed: decoding borrows every string from the encoded bytes (it allocates
/// only the lists), and a new value is encoded from borrowed parts of the old one and of
/// the inventory that arrived, without copying a string. postcard writes `&str` and
/// `String` the same way, so the bytes are those of the owned records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HostView<'a> {
    pub host: &'a str,
    #[serde(borrow)]
    pub addr: Option<&'a str>,
    /// Sorted by key (see `Key`).
    #[serde(borrow)]
    pub entries: Vec<EntryView<'a>>,
}

/// One (host, disk) sighting as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EntryView<'a> {
    #[serde(borrow)]
    pub disk: DiskView<'a>,
    pub present: bool,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// When its latest stay (this host, this device) began.
    pub since: Millis,
    /// Keyed by identity + NUL + device (a second device with the same UUID).
    pub dup: bool,
    /// Host name and address when they differ from the host's (a disk that vanished
    /// before the host was renamed or moved keeps the place it was last seen at).
    #[serde(borrow)]
    pub place: Option<(&'a str, Option<&'a str>)>,
    /// Earlier stays on this host, oldest first.
    #[serde(borrow)]
    pub past: Vec<PastStay<'a>>,
}

/// A [`DiskRecord`], borrowed (the same fields in the same order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DiskView<'a> {
    #[serde(borrow)]
    pub uuid: Option<&'a str>,
    #[serde(borrow)]
    pub label: Option<&'a str>,
    pub device: &'a str,
    #[serde(borrow)]
    pub fstype: Option<&'a str>,
    #[serde(borrow)]
    pub mountpoints: Vec<&'a str>,
}

/// A stay that ended: where the disk was, and from when to when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PastStay<'a> {
    pub host: &'a str,
    #[serde(borrow)]
    pub addr: Option<&'a str>,
    pub device: &'a str,
    #[serde(borrow)]
    pub label: Option<&'a str>,
    pub first_seen: Millis,
    pub last_seen: Millis,
}

impl<'a> DiskView<'a> {
    pub fn of(d: &'a DiskRecord) -> DiskView<'a> {
        DiskView {
            uuid: d.uuid.as_deref(),
            label: d.label.as_deref(),
            device: &d.device,
            fstype: d.fstype.as_deref(),
            mountpoints: d.mountpoints.iter().map(String::as_str).collect(),
        }
    }

    pub fn to_record(&self) -> DiskRecord {
        DiskRecord {
            uuid: self.uuid.map(str::to_string),
            label: self.label.map(str::to_string),
            device: self.device.to_string(),
            fstype: self.fstype.map(str::to_string),
            mountpoints: self.mountpoints.iter().map(|m| m.to_string()).collect(),
            hardware: Default::default(),
        }
    }

    /// `DiskRecord::matches`.
    pub fn matches(&self, term: &str) -> bool {
        self.uuid.is_some_and(|u| u.eq_ignore_ascii_case(term))
            || self.label == Some(term)
            || self.device == term
    }

    /// Whether it says the same as `d`.
    pub fn same_as(&self, d: &DiskRecord) -> bool {
        self.uuid == d.uuid.as_deref()
            && self.label == d.label.as_deref()
            && self.device == d.device
            && self.fstype == d.fstype.as_deref()
            && self.mountpoints.len() == d.mountpoints.len()
            && self
                .mountpoints
                .iter()
                .zip(&d.mountpoints)
                .all(|(a, b)| a == b)
    }

    /// The disk's UUID when it has one (its identity, in any case).
    pub fn uuid(&self) -> Option<&'a str> {
        self.uuid.filter(|u| !u.is_empty())
    }
}

impl<'a> EntryView<'a> {
    /// Its key within the host.
    pub fn key(&self) -> Key<'a> {
        Key {
            uuid: self.disk.uuid(),
            device: self.disk.device,
            dup: self.dup,
        }
    }

    /// Host name and address it was last seen at, given its host's.
    pub fn place(&self, host: &'a str, addr: Option<&'a str>) -> (&'a str, Option<&'a str>) {
        self.place.unwrap_or((host, addr))
    }

    /// The sighting this entry is, on host `node_id` whose value is `h`.
    pub fn sighting(&self, node_id: &str, h: &HostView<'_>) -> Sighting {
        let (host, addr) = self.place.unwrap_or((h.host, h.addr));
        Sighting {
            node_id: node_id.to_string(),
            host: host.to_string(),
            addr: addr.map(str::to_string),
            disk: self.disk.to_record(),
            present: self.present,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// An entry's key within its host, as `DiskRecord::identity` spells it ("uuid:" and the
/// UUID in lower case, else "dev:" and the device), + NUL + device for a duplicate UUID;
/// compared and hashed as that text, without building it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key<'a> {
    /// A non-empty UUID.
    pub uuid: Option<&'a str>,
    pub device: &'a str,
    pub dup: bool,
}

impl<'a> Key<'a> {
    pub fn of(d: &'a DiskRecord) -> Key<'a> {
        Key {
            uuid: d.uuid.as_deref().filter(|u| !u.is_empty()),
            device: &d.device,
            dup: false,
        }
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + 'a {
        let (prefix, text, lower): (&'static [u8], &'a str, bool) = match self.uuid {
            Some(u) => (b"uuid:", u, true),
            None => (b"dev:", self.device, false),
        };
        let tail = if self.dup { self.device } else { "" };
        prefix
            .iter()
            .copied()
            .chain(
                text.bytes()
                    .map(move |b| if lower { b.to_ascii_lowercase() } else { b }),
            )
            .chain(self.dup.then_some(0u8))
            .chain(tail.bytes())
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes().eq(other.bytes())
    }
}

impl Eq for Key<'_> {}

impl Ord for Key<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl PartialOrd for Key<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(fnv(self.bytes()));
    }
}

impl<'a> HostView<'a> {
    /// Decode a value (without its chunk framing).
    pub fn decode(bytes: &'a [u8]) -> Option<HostView<'a>> {
        postcard::from_bytes(bytes).ok()
    }

    /// Its index terms (see `term`), sorted, without duplicates.
    pub fn terms(&self) -> Vec<u64> {
        let mut terms = Vec::with_capacity(self.entries.len() * 4 + 1);
        for e in &self.entries {
            let d = &e.disk;
            if let Some(u) = d.uuid {
                terms.push(term_lower(b'u', u));
            }
            if let Some(l) = d.label {
                terms.push(term(b'l', l));
            }
            terms.push(term(b'd', d.device));
            terms.push(term(b'h', e.place(self.host, self.addr).0));
            for p in &e.past {
                if let Some(l) = p.label {
                    terms.push(term(b'l', l));
                }
                terms.push(term(b'd', p.device));
            }
        }
        terms.sort_unstable();
        terms.dedup();
        terms
    }

    /// The value to store, in chunks, and the same value as one framed buffer (what
    /// memory keeps: for a one-chunk value, the very buffer handed to sled, so that the
    /// copy in sled's cache and ours are one allocation).
    pub fn encode(&self) -> Result<(Vec<sled::IVec>, sled::IVec), postcard::Error> {
        let bytes = postcard::to_allocvec(self)?;
        let chunks: Vec<sled::IVec> = split(&bytes).into_iter().map(sled::IVec::from).collect();
        let value = match &chunks[..] {
            [one] => one.clone(),
            _ => framed(&bytes),
        };
        Ok((chunks, value))
    }
}

/// A sighting in memory, owned (what a schema-2 store is converted from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its key within the host: the disk's identity, + NUL + device for a duplicate.
    pub key: String,
    pub s: Sighting,
    pub since: Millis,
}

/// The encoded value of a host made of owned entries (without past stays): the chunks to
/// store.
pub(super) fn encode_entries(
    host: &str,
    addr: Option<&str>,
    entries: &[Entry],
) -> Result<Vec<Vec<u8>>, postcard::Error> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let view = HostView {
        host,
        addr,
        entries: sorted
            .into_iter()
            .map(|e| EntryView {
                dup: e.key != e.s.disk.identity(),
                place: (e.s.host != host || e.s.addr.as_deref() != addr)
                    .then_some((e.s.host.as_str(), e.s.addr.as_deref())),
                disk: DiskView::of(&e.s.disk),
                present: e.s.present,
                first_seen: e.s.first_seen,
                last_seen: e.s.last_seen,
                since: e.since,
                past: Vec::new(),
            })
            .collect(),
    };
    Ok(view.encode()?.0.into_iter().map(|c| c.to_vec()).collect())
}

/// One host's committed state, shared with readers (never changed once published): its
/// encoded value, decoded (borrowing) by whoever reads it.
#[derive(Debug)]
pub(super) struct HostState {
    pub node_id: Arc<str>,
    /// Framed as chunk 0 is (see `join_chunks`).
    bytes: sled::IVec,
    /// How many entries it has.
    pub len: usize,
}

impl HostState {
    /// `bytes` must decode (see `HostView::decode`).
    pub fn new(node_id: Arc<str>, bytes: sled::IVec, len: usize) -> HostState {
        HostState {
            node_id,
            bytes,
            len,
        }
    }

    /// Its value. Only bytes that decoded are ever kept, so this is never empty for a
    /// host that has entries.
    pub fn view(&self) -> HostView<'_> {
        HostView::decode(unframed(&self.bytes)).unwrap_or(HostView {
            host: "",
            addr: None,
            entries: Vec::new(),
        })
    }
}

/// A host's value from its stored chunks (in order), as one buffer framed like chunk 0
/// (the chunk itself when there is only one: shared with sled, not copied); `None` when
/// they do not make a value.
pub(super) fn join_chunks(chunks: &[sled::IVec]) -> Option<sled::IVec> {
    let first = chunks.first()?;
    let n = u32::from_be_bytes(first.get(..4)?.try_into().ok()?) as usize;
    if n == 0 || chunks.len() < n {
        return None;
    }
    if n == 1 {
        return Some(first.clone());
    }
    let len = first.len() + chunks[1..n].iter().map(|c| c.len()).sum::<usize>();
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(first);
    for c in &chunks[1..n] {
        bytes.extend_from_slice(c);
    }
    Some(sled::IVec::from(bytes))
}

/// The encoded value in a buffer framed by `framed` or `join_chunks`.
pub(super) fn unframed(bytes: &[u8]) -> &[u8] {
    bytes.get(4..).unwrap_or(&[])
}

/// `bytes` behind a (meaningless) 4-byte frame, as chunk 0 has.
fn framed(bytes: &[u8]) -> sled::IVec {
    let mut v = Vec::with_capacity(bytes.len() + 4);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(bytes);
    sled::IVec::from(v)
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
    fnv(std::iter::once(kind).chain(text.bytes()))
}

/// `term(kind, &text.to_ascii_lowercase())`, without the copy.
pub(super) fn term_lower(kind: u8, text: &str) -> u64 {
    fnv(std::iter::once(kind).chain(text.bytes().map(|b| b.to_ascii_lowercase())))
}

/// FNV-1a, 64 bits.
fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
