//! The v6 layout in sled: one value per host, postcard-encoded, split across keys when large.
//!
//! Tree `hosts`: key = node id + NUL + chunk number (u32, big endian); chunk 0 starts with
//! the number of chunks (u32, big endian) with the second high bit set and the highest one
//! clear ([`FRAME_V6`]), then the encoded [`HostView`] follows across the chunks in order. A host is always rewritten as
//! one sled batch (every chunk, and the removal of chunks it no longer needs), so after a
//! crash it is either its old or its new value, never a mix.
//!
//! The two high bits tell the schemas' values apart (a real count never has them: that
//! would take 2^30 chunks): schema 3 set neither, schema 4 the highest ([`FRAME_V4`]),
//! schema 5 both ([`FRAME_V5`]), schema 6 the second alone. So a conversion (see `migrate`)
//! can rewrite hosts one at a time, and a rerun after a crash skips the hosts already
//! rewritten; and an older daemon started on a store whose conversion was interrupted finds
//! no value it could read in a converted host instead of misreading it: schemas 4 and 5
//! compare the marks with their own, and schema 3, which has none, reads a count past the
//! chunks there are. (Every pair of the two bits is taken now: a later schema marks its
//! values with the third bit as well, which every earlier reader takes for a count too
//! large.) Schema 5 had a [`DiskView`] without the health and the filesystem usage and an
//! [`EntryView`] without its health readings, schema 4 a disk without the probe either,
//! schema 3 without the hardware too.

mod chunks;
mod condition;
pub(super) use chunks::*;
pub use condition::MAX_READINGS;
pub(super) use condition::*;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{identity_parts, DiskRecord, Hardware, Millis, Probe, Sighting};

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
    /// New in schema 6: the disk's last health readings here, newest first (kept encoded).
    #[serde(borrow)]
    pub readings: HealthLog<'a>,
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
    /// New in schema 4.
    #[serde(borrow)]
    pub hardware: HardwareView<'a>,
    /// New in schema 5: `Probe::code`.
    pub probe: u8,
    /// New in schema 6: its SMART health as last reported (a partition's is its disk's).
    #[serde(borrow)]
    pub health: Option<HealthView<'a>>,
    /// New in schema 6: how full its mounted filesystem was.
    pub fs: Option<FsView>,
}

/// A [`Hardware`], borrowed (the same fields in the same order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HardwareView<'a> {
    pub size: Option<u64>,
    #[serde(borrow)]
    pub model: Option<&'a str>,
    #[serde(borrow)]
    pub vendor: Option<&'a str>,
    #[serde(borrow)]
    pub serial: Option<&'a str>,
    #[serde(borrow)]
    pub wwn: Option<&'a str>,
    #[serde(borrow)]
    pub transport: Option<&'a str>,
    pub removable: Option<bool>,
    pub rotational: Option<bool>,
    #[serde(borrow)]
    pub parent: Option<&'a str>,
    #[serde(borrow)]
    pub backing_file: Option<&'a str>,
}

impl<'a> HardwareView<'a> {
    pub fn of(h: &'a Hardware) -> HardwareView<'a> {
        HardwareView {
            size: h.size,
            model: h.model.as_deref(),
            vendor: h.vendor.as_deref(),
            serial: h.serial.as_deref(),
            wwn: h.wwn.as_deref(),
            transport: h.transport.as_deref(),
            removable: h.removable,
            rotational: h.rotational,
            parent: h.parent.as_deref(),
            backing_file: h.backing_file.as_deref(),
        }
    }

    pub fn to_record(&self) -> Hardware {
        let owned = |v: Option<&str>| v.map(str::to_string);
        Hardware {
            size: self.size,
            model: owned(self.model),
            vendor: owned(self.vendor),
            serial: owned(self.serial),
            wwn: owned(self.wwn),
            transport: owned(self.transport),
            removable: self.removable,
            rotational: self.rotational,
            parent: owned(self.parent),
            backing_file: owned(self.backing_file),
        }
    }

    /// Whether it says the same as `h`.
    pub fn same_as(&self, h: &Hardware) -> bool {
        // Destructured, so that a field added to `Hardware` cannot be forgotten here.
        let Hardware {
            size,
            model,
            vendor,
            serial,
            wwn,
            transport,
            removable,
            rotational,
            parent,
            backing_file,
        } = h;
        self.size == *size
            && self.model == model.as_deref()
            && self.vendor == vendor.as_deref()
            && self.serial == serial.as_deref()
            && self.wwn == wwn.as_deref()
            && self.transport == transport.as_deref()
            && self.removable == *removable
            && self.rotational == *rotational
            && self.parent == parent.as_deref()
            && self.backing_file == backing_file.as_deref()
    }
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
            hardware: HardwareView::of(&d.hardware),
            probe: d.probe.code(),
            health: d.health.as_ref().map(HealthView::of),
            fs: d.fs.as_ref().map(FsView::of),
        }
    }

    pub fn to_record(&self) -> DiskRecord {
        DiskRecord {
            uuid: self.uuid.map(str::to_string),
            label: self.label.map(str::to_string),
            device: self.device.to_string(),
            fstype: self.fstype.map(str::to_string),
            mountpoints: self.mountpoints.iter().map(|m| m.to_string()).collect(),
            hardware: self.hardware.to_record(),
            probe: Probe::from_code(self.probe),
            health: self.health.as_ref().map(HealthView::to_record),
            fs: self.fs.map(FsView::to_record),
        }
    }

    /// `DiskRecord::matches`.
    pub fn matches(&self, term: &str) -> bool {
        crate::model::matches(
            self.uuid,
            self.label,
            self.device,
            self.hardware.serial,
            self.hardware.wwn,
            term,
        )
    }

    /// `DiskRecord::identity_parts`.
    pub fn identity_parts(&self) -> (&'static str, &'a str) {
        identity_parts(
            self.uuid,
            self.hardware.wwn,
            self.hardware.serial,
            self.device,
        )
    }

    /// `DiskRecord::identity`, built from the same bytes as its [`Key`].
    pub fn identity(&self) -> String {
        let key = Key::of_parts(self.identity_parts(), self.device, false);
        String::from_utf8_lossy(&key.bytes().collect::<Vec<u8>>()).into_owned()
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
            && self.hardware.same_as(&d.hardware)
            && Probe::from_code(self.probe) == d.probe
            && match (&self.health, &d.health) {
                (Some(a), Some(b)) => a.same_as(b),
                (None, None) => true,
                _ => false,
            }
            && self.fs.map(FsView::to_record) == d.fs
    }
}

impl<'a> EntryView<'a> {
    /// Its key within the host.
    pub fn key(&self) -> Key<'a> {
        Key::of_parts(self.disk.identity_parts(), self.disk.device, self.dup)
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
/// UUID in lower case, else "wwn:" and the WWN as `wwn_key` has it, else "serial:" and the
/// serial, else "dev:" and the device), + NUL + device for a duplicate identity; compared
/// and hashed as that text, without building it (a merge keys every disk of an inventory).
#[derive(Debug, Clone, Copy)]
pub(super) struct Key<'a> {
    /// The kind of identity (`uuid:`, `wwn:`, `serial:` or `dev:`).
    kind: &'static str,
    /// Its text as the identity has it, but for the case (a WWN without its prefix).
    text: &'a str,
    /// The text is compared in lower case (a UUID, a WWN).
    lower: bool,
    device: &'a str,
    pub dup: bool,
}

impl<'a> Key<'a> {
    pub fn of(d: &'a DiskRecord) -> Key<'a> {
        Key::of_parts(d.identity_parts(), &d.device, false)
    }

    /// From `identity_parts`.
    fn of_parts((kind, text): (&'static str, &'a str), device: &'a str, dup: bool) -> Key<'a> {
        let (text, lower) = match kind {
            "uuid:" => (text, true),
            "wwn:" => (wwn_key_text(text), true),
            _ => (text, false),
        };
        Key {
            kind,
            text,
            lower,
            device,
            dup,
        }
    }

    /// A disk known by its UUID.
    pub fn is_uuid(&self) -> bool {
        self.kind == "uuid:"
    }

    /// A disk known by its device only (no UUID, WWN or serial).
    pub fn is_device(&self) -> bool {
        self.kind == "dev:"
    }

    /// The key's text, byte by byte (what `DiskRecord::identity` builds, + NUL + device).
    pub fn bytes(&self) -> impl Iterator<Item = u8> + 'a {
        let lower = self.lower;
        let tail = if self.dup { self.device } else { "" };
        self.kind
            .bytes()
            .chain(
                self.text
                    .bytes()
                    .map(move |b| if lower { b.to_ascii_lowercase() } else { b }),
            )
            .chain(self.dup.then_some(0u8))
            .chain(tail.bytes())
    }
}

/// `crate::model::wwn_key(wwn)` but for the case, without the copy: trimmed, without one
/// `0x`, `naa.` or `eui.` prefix (in any case).
fn wwn_key_text(wwn: &str) -> &str {
    let t = wwn.trim();
    ["0x", "naa.", "eui."]
        .iter()
        .find_map(|p| {
            t.as_bytes()
                .get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p.as_bytes()))
                .and_then(|_| t.get(p.len()..))
        })
        .unwrap_or(t)
}

/// `crate::model::wwn_key(wwn)`, byte by byte, without the copies.
pub(super) fn wwn_key_bytes(wwn: &str) -> impl Iterator<Item = u8> + '_ {
    wwn_key_text(wwn).bytes().map(|b| b.to_ascii_lowercase())
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
        let mut terms = Vec::with_capacity(self.entries.len() * 6 + 1);
        for e in &self.entries {
            let d = &e.disk;
            if let Some(u) = d.uuid {
                terms.push(term_lower(b'u', u));
            }
            if let Some(l) = d.label {
                terms.push(term(b'l', l));
            }
            if let Some(s) = d.hardware.serial.filter(|s| !s.is_empty()) {
                terms.push(term(b's', s));
            }
            if let Some(w) = d.hardware.wwn.filter(|w| !w.trim().is_empty()) {
                terms.push(term_wwn(w));
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
                readings: e
                    .s
                    .disk
                    .health
                    .as_ref()
                    .and_then(Reading::of)
                    .map(HealthLog::one)
                    .unwrap_or_default(),
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

    /// Its value as sled holds it (framed as chunk 0 is), for the warm-start image.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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

/// An index term: `kind` (`u` UUID lower-cased, `l` label, `d` device, `h` host name, `s`
/// serial, `w` WWN as `wwn_key` has it) and its text, hashed (FNV-1a). A collision only adds
/// a candidate, which every reader checks against the records themselves.
pub(super) fn term(kind: u8, text: &str) -> u64 {
    fnv(std::iter::once(kind).chain(text.bytes()))
}

/// `term(kind, &text.to_ascii_lowercase())`, without the copy.
pub(super) fn term_lower(kind: u8, text: &str) -> u64 {
    fnv(std::iter::once(kind).chain(text.bytes().map(|b| b.to_ascii_lowercase())))
}

/// `term(b'w', &wwn_key(wwn))`, without the copies.
pub(super) fn term_wwn(wwn: &str) -> u64 {
    fnv(std::iter::once(b'w').chain(wwn_key_bytes(wwn)))
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
