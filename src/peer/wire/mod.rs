//! The native wire format: what one datagram holds, how an inventory is cut into datagrams,
//! and the checks every field read off the wire must pass.
//!
//! A datagram is `MAGIC` (4 bytes), a version byte, then a postcard-encoded [`Envelope`].
//! The magic cannot be confused with the Perl diskd's `diskd:` prefix, which shares the
//! group and port. postcard rather than YAML: about a fifth fewer bytes per record, headers
//! included (see BENCHMARKS.md), no aliases or anchors to bomb a parser with, and lengths
//! are checked against the bytes actually present.
//!
//! ## Revisions and mixed-version fleets
//!
//! Revision 1 (the first releases) is the envelope alone. Revision 2 adds hardware
//! identity without changing a byte of revision 1: an inventory datagram is the revision-1
//! envelope, its disks in the revision-1 layout, followed by a *trailer*: the tag
//! [`TRAILER_HARDWARE`] and the postcard list of every disk's [`Hardware`], in the chunk's
//! order. The version byte stays 1 on purpose. A revision-1 daemon decodes the envelope
//! and ignores the bytes after it (postcard's `from_bytes` does not require the input to be
//! used up), so an older peer still sees a newer peer's disks, only without hardware; a
//! newer daemon reading an older peer finds no trailer and leaves the hardware unknown.
//! A trailer with a tag this build does not know is ignored the same way, which is the rule
//! for any later revision: a new trailer tag, never a changed layout.
//!
//! Revision 3 adds what blkid made of each disk ([`crate::model::Probe`]: found a
//! signature, probed and found nothing, in use, could not probe), without which no peer may
//! offer a disk as blank: after the hardware trailer (or in its place when no disk has
//! hardware), the tag [`TRAILER_PROBE`] and the postcard list of every disk's probe code
//! (one byte each), in the chunk's order. A revision-2 daemon reads the hardware trailer
//! with `from_bytes`, which leaves the bytes after it alone, and ignores a first trailer
//! whose tag it does not know: it sees the disks and their hardware, never misreads the
//! probe. A revision-3 daemon reading an older peer finds no probe trailer and leaves every
//! disk's probe `Unknown`, which is never blank. Trailers are read in order until a tag
//! this build does not know, whose bytes (and any after them) are a later revision's.
//!
//! Revision 4 adds each disk's condition: its SMART health ([`crate::model::DiskHealth`]:
//! the state as [`crate::model::HealthState::code`], the reasons, the figures, when it was
//! read) and how full its filesystem is ([`crate::model::FsUsage`]), both optional. After
//! the probe trailer (or in place of the trailers before it that are left out), the tag
//! [`TRAILER_CONDITION`] and the postcard list of every disk's `(health, fs)`, in the
//! chunk's order (see `condition.rs` for the frozen layout); left out when no disk of the
//! chunk has either. It is bounded like every other field (at most 8 reasons of at most
//! 120 printable bytes, a temperature in -100..=200 °C, a percentage used of at most 1000,
//! used and available space within the size): a value out of bounds rejects the datagram
//! (`invalid_field`), a list of another length than the disks `bad_chunk`. A revision-3
//! daemon stops at the tag it does not know and a revision-2 one ignores a first trailer
//! it does not know, so both see the disks as before; a revision-4 daemon reading an older
//! peer finds no condition trailer and leaves health and capacity unknown (`None`).

mod condition;
mod validate;
pub use condition::*;
pub use validate::*;

use serde::{Deserialize, Serialize};

use crate::model::{DiskRecord, Hardware, Probe};

/// First bytes of every native datagram.
pub const MAGIC: &[u8; 4] = b"DSKD";
/// Envelope version this build speaks (unchanged by later revisions: see the module
/// documentation).
pub const VERSION: u8 = 1;
/// The wire revision this build speaks: 2 adds the hardware trailer, 3 the probe trailer,
/// 4 the condition trailer.
pub const REVISION: u8 = 4;
/// Tag of the trailer that carries the hardware of an inventory chunk's disks.
pub const TRAILER_HARDWARE: u8 = 2;
/// Tag of the trailer that carries the probe code of each of an inventory chunk's disks.
pub const TRAILER_PROBE: u8 = 3;
/// Tag of the trailer that carries the health and filesystem usage of each of an
/// inventory chunk's disks (revision 4; also the delta's, see [`super::delta`]).
pub const TRAILER_CONDITION: u8 = 4;
pub use crate::model::limits;
pub use crate::model::limits::{MAX_DATAGRAM, MIN_DATAGRAM};
use crate::model::{printable, valid_node_id, valid_uuid};

/// Who sent a datagram and in what order; identical on every datagram of one daemon run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender's permanent node id (32 hex digits).
    pub node_id: String,
    /// Sender's node name.
    pub node: String,
    /// Random id of the sender's current run: sequence numbers restart with it.
    pub boot: u64,
    /// Per-boot sequence number, one per datagram.
    pub seq: u64,
    /// Sender's wall clock when sending, ms since the epoch.
    pub sent_ms: u64,
    /// What the datagram says.
    pub body: Body,
}

/// The message kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// One chunk of the sender's inventory.
    Inventory(Chunk),
    /// "Everybody, announce please" (rate-limited by each receiver).
    Ping,
    /// The sender is stopping cleanly: mark it not live now.
    Goodbye,
    /// "Node `target`, please mount (or unmount) your disk `uuid`." Retried by the sender
    /// with the same `request_id`; the owner answers every copy with the same reply.
    MountRequest(MountRequest),
    /// The owner's answer to a mount request, addressed to the requester.
    MountReply(MountReply),
    /// A gossip membership packet (unicast only; never multicast, so daemons that predate
    /// gossip never see this variant).
    Swim(Swim),
    /// "Send me your member list": a member that just joined (or rejoined) asks the first
    /// member that let it in (unicast only). A daemon of an earlier release cannot decode
    /// it and drops it, counted; the new member then learns the fleet the slow way, from
    /// foca's gossip and probes.
    MembersPull,
    /// One page of the sender's live gossip members, answering `MembersPull`: the whole
    /// fleet at once (one copy per join), not one member per probe period.
    Members(MembersPage),
}

/// Most members in one [`MembersPage`]: at most 49 bytes each (an IPv6 address, the
/// longest varints), so a page, sealed, stays within a 1,400-byte datagram.
pub const MEMBERS_PER_PAGE: usize = 24;

/// A page of live gossip members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    /// Its index, `0..count`.
    pub index: u16,
    /// How many pages the list has.
    pub count: u16,
    /// The members.
    pub members: Vec<super::gossip::MemberId>,
}

/// A foca packet, with the sender's inventory version riding along: a member that talks
/// to us learns whether it is behind on our disks (anti-entropy at no extra packet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swim {
    /// The sender's latest inventory generation that changed content (this boot).
    pub generation: u64,
    /// foca's bytes.
    pub data: Vec<u8>,
}

/// A remote mount or unmount request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Random id chosen by the requester; retries reuse it.
    pub request_id: u64,
    /// Node id of the disk's owner.
    pub target: String,
    /// UUID of the disk.
    pub uuid: String,
    /// Mount read-only.
    pub read_only: bool,
    /// Unmount instead of mount.
    pub unmount: bool,
}

/// The owner's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountReply {
    /// The request this answers.
    pub request_id: u64,
    /// Node id of the requester.
    pub target: String,
    /// Done (mounted, already mounted, or unmounted).
    pub ok: bool,
    /// The device on the owner.
    pub device: Option<String>,
    /// Where it is mounted on the owner.
    pub mountpoint: Option<String>,
    /// Why it was refused, or what was done.
    pub message: String,
}

/// One numbered part of an inventory generation.
///
/// Its serde form is the revision-1 layout (disks without hardware); [`encode`] and
/// [`decode`] carry the hardware, the probe and the condition in the trailers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Inventory generation; a receiver replaces the inventory only when every chunk of
    /// one generation arrived.
    pub generation: u64,
    /// This chunk's index, `0..count`.
    pub index: u16,
    /// How many chunks the generation has.
    pub count: u16,
    /// How many disks the whole generation holds.
    pub total: u32,
    /// The disks in this chunk.
    #[serde(with = "revision1")]
    pub disks: Vec<DiskRecord>,
}

/// The disks of a chunk as revision 1 lays them out: every field but the hardware.
mod revision1 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::DiskRecord;

    #[derive(Serialize)]
    struct Out<'a> {
        uuid: &'a Option<String>,
        label: &'a Option<String>,
        device: &'a String,
        fstype: &'a Option<String>,
        mountpoints: &'a Vec<String>,
    }

    #[derive(Deserialize)]
    struct In {
        uuid: Option<String>,
        label: Option<String>,
        device: String,
        fstype: Option<String>,
        mountpoints: Vec<String>,
    }

    pub fn serialize<S: Serializer>(disks: &[DiskRecord], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(disks.iter().map(|d| Out {
            uuid: &d.uuid,
            label: &d.label,
            device: &d.device,
            fstype: &d.fstype,
            mountpoints: &d.mountpoints,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiskRecord>, D::Error> {
        Ok(Vec::<In>::deserialize(d)?
            .into_iter()
            .map(|i| DiskRecord {
                uuid: i.uuid,
                label: i.label,
                device: i.device,
                fstype: i.fstype,
                mountpoints: i.mountpoints,
                hardware: Default::default(),
                probe: Default::default(),
                health: None,
                fs: None,
            })
            .collect())
    }

    /// The revision-1 size of a disk, in bytes.
    pub fn size(d: &DiskRecord) -> usize {
        postcard::experimental::serialized_size(&Out {
            uuid: &d.uuid,
            label: &d.label,
            device: &d.device,
            fstype: &d.fstype,
            mountpoints: &d.mountpoints,
        })
        .unwrap_or(usize::MAX)
    }
}

/// Why a datagram was dropped; each reason has its own counter in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Reject {
    /// Longer than any valid datagram.
    #[error("oversized")]
    Oversized,
    /// Starts with the Perl diskd's `diskd:` prefix.
    #[error("legacy")]
    Legacy,
    /// Not ours at all.
    #[error("bad_magic")]
    BadMagic,
    /// A version we do not speak.
    #[error("bad_version")]
    BadVersion,
    /// The envelope does not decode.
    #[error("undecodable")]
    Undecodable,
    /// A field is out of bounds or malformed.
    #[error("invalid_field")]
    InvalidField,
    /// A chunk that contradicts its generation (count changed, duplicate with other
    /// content, index out of range).
    #[error("bad_chunk")]
    BadChunk,
    /// Dropped to keep memory bounded (too many pending generations).
    #[error("over_capacity")]
    OverCapacity,
    /// From a newcomer while the peer table is full (`peers.max`) of peers that are live
    /// or hold disks.
    #[error("peer_table_full")]
    PeerTableFull,
    /// An inventory that would take the peers' disk records past `peers.max_records`.
    #[error("over_record_budget")]
    RecordBudget,
    /// Unsealed while keys are configured.
    #[error("plaintext")]
    Plaintext,
    /// Sealed, but we have no keys to open it.
    #[error("sealed_no_key")]
    SealedNoKey,
    /// Sealed with a key we do not hold.
    #[error("unknown_key")]
    UnknownKey,
    /// Does not open: tampered, truncated or forged.
    #[error("bad_seal")]
    BadSeal,
    /// Seen before, or older than the sender's replay window.
    #[error("replay")]
    Replay,
    /// Timestamp too far from our clock.
    #[error("clock_skew")]
    ClockSkew,
    /// A Perl-format datagram that does not parse (with `multicast.legacy` on).
    #[error("legacy_invalid")]
    LegacyInvalid,
    /// A gossip packet the engine refused, or one that came the wrong way (multicast).
    #[error("gossip_invalid")]
    GossipInvalid,
}

impl Reject {
    /// The counter name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Legacy => "legacy",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::Undecodable => "undecodable",
            Reject::InvalidField => "invalid_field",
            Reject::BadChunk => "bad_chunk",
            Reject::OverCapacity => "over_capacity",
            Reject::PeerTableFull => "peer_table_full",
            Reject::RecordBudget => "over_record_budget",
            Reject::Plaintext => "plaintext",
            Reject::SealedNoKey => "sealed_no_key",
            Reject::UnknownKey => "unknown_key",
            Reject::BadSeal => "bad_seal",
            Reject::Replay => "replay",
            Reject::ClockSkew => "clock_skew",
            Reject::LegacyInvalid => "legacy_invalid",
            Reject::GossipInvalid => "gossip_invalid",
        }
    }
}

/// Encode one envelope as a datagram.
pub fn encode(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    // postcard cannot fail on these types (no maps with non-string keys, no floats); an
    // error would be a bug in our own types, so fall back to an empty payload that every
    // receiver rejects rather than panic.
    let out = match postcard::to_extend(env, out) {
        Ok(v) => v,
        Err(_) => return MAGIC.to_vec(),
    };
    let Body::Inventory(c) = &env.body else {
        return out;
    };
    let mut out = out;
    // Only when some disk has hardware: an inventory without any is revision 1 to the
    // byte, and costs no trailer.
    if c.disks.iter().any(|d| !d.hardware.is_empty()) {
        out.push(TRAILER_HARDWARE);
        let hardware: Vec<&Hardware> = c.disks.iter().map(|d| &d.hardware).collect();
        out = match postcard::to_extend(&hardware, out) {
            Ok(v) => v,
            Err(_) => return MAGIC.to_vec(),
        };
    }
    // After the hardware, which a revision-2 reader takes and stops at; only when some
    // disk's probe is known.
    if c.disks.iter().any(|d| d.probe != Probe::Unknown) {
        out.push(TRAILER_PROBE);
        let codes: Vec<u8> = c.disks.iter().map(|d| d.probe.code()).collect();
        out = match postcard::to_extend(&codes, out) {
            Ok(v) => v,
            Err(_) => return MAGIC.to_vec(),
        };
    }
    // Last, after what a revision-3 reader takes; only when some disk's condition is known.
    if any_condition(c.disks.iter()) {
        out = match append_condition(out, &c.disks) {
            Ok(v) => v,
            Err(_) => return MAGIC.to_vec(),
        };
    }
    out
}

/// Decode and validate one datagram.
pub fn decode(bytes: &[u8]) -> Result<Envelope, Reject> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Reject::Oversized);
    }
    if bytes.starts_with(b"diskd:") {
        return Err(Reject::Legacy);
    }
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(Reject::BadMagic);
    };
    let Some((&version, payload)) = rest.split_first() else {
        return Err(Reject::BadVersion);
    };
    if version != VERSION {
        return Err(Reject::BadVersion);
    }
    let (mut env, trailer): (Envelope, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|_| Reject::Undecodable)?;
    if let Body::Inventory(c) = &mut env.body {
        read_trailers(c, trailer)?;
    }
    validate(&env)?;
    Ok(env)
}

/// Apply an inventory chunk's trailers (see the module documentation): each known tag at
/// most once; an unknown tag ends the reading (a later revision's, ignored as revision 1
/// ignores ours).
fn read_trailers(c: &mut Chunk, mut rest: &[u8]) -> Result<(), Reject> {
    let (mut hardware_seen, mut probe_seen, mut condition_seen) = (false, false, false);
    while let Some((&tag, body)) = rest.split_first() {
        match tag {
            TRAILER_HARDWARE if !hardware_seen => {
                let (hardware, after): (Vec<Hardware>, &[u8]) =
                    postcard::take_from_bytes(body).map_err(|_| Reject::Undecodable)?;
                if hardware.len() != c.disks.len() {
                    return Err(Reject::BadChunk);
                }
                for (d, h) in c.disks.iter_mut().zip(hardware) {
                    d.hardware = h;
                }
                hardware_seen = true;
                rest = after;
            }
            TRAILER_PROBE if !probe_seen => {
                let (codes, after): (Vec<u8>, &[u8]) =
                    postcard::take_from_bytes(body).map_err(|_| Reject::Undecodable)?;
                if codes.len() != c.disks.len() {
                    return Err(Reject::BadChunk);
                }
                for (d, code) in c.disks.iter_mut().zip(codes) {
                    d.probe = Probe::from_code(code);
                }
                probe_seen = true;
                rest = after;
            }
            TRAILER_CONDITION if !condition_seen => {
                rest = read_condition(body, &mut c.disks)?;
                condition_seen = true;
            }
            TRAILER_HARDWARE | TRAILER_PROBE | TRAILER_CONDITION => return Err(Reject::BadChunk),
            _ => break,
        }
    }
    Ok(())
}

/// Cut an inventory into chunk bodies whose datagrams stay within `max_datagram` bytes.
/// `template` supplies the header fields used to measure the overhead.
pub fn chunk_inventory(
    template: &Envelope,
    generation: u64,
    disks: &[DiskRecord],
    max_datagram: usize,
) -> Vec<Chunk> {
    // Worst-case header: the largest varints any field can take.
    let worst = Envelope {
        boot: u64::MAX,
        seq: u64::MAX,
        sent_ms: u64::MAX,
        body: Body::Inventory(Chunk {
            generation: u64::MAX,
            index: u16::MAX,
            count: u16::MAX,
            total: u32::MAX,
            disks: Vec::new(),
        }),
        ..template.clone()
    };
    // +3: the disk list's length prefix grows from 1 to at most 3 varint bytes; +4 three
    // times: each trailer's tag and its list's length prefix (hardware, probe, condition).
    let overhead = encode(&worst).len() + 3 + 4 + 4 + 4;
    let budget = max_datagram.saturating_sub(overhead).max(1);

    let fitted: Vec<DiskRecord> = disks.iter().filter_map(fit_disk).collect();
    let mut chunks: Vec<Vec<DiskRecord>> = Vec::new();
    let mut current: Vec<DiskRecord> = Vec::new();
    let mut used = 0usize;
    for d in fitted {
        let wire_size = |d: &DiskRecord| {
            // Every disk of a chunk has a trailer entry once one has hardware: count it,
            // its probe code's byte, and its condition entry (two bytes without any).
            revision1::size(d)
                .saturating_add(
                    postcard::experimental::serialized_size(&d.hardware).unwrap_or(usize::MAX),
                )
                .saturating_add(1)
                .saturating_add(condition_size(d))
        };
        let mut size = wire_size(&d);
        let mut d = d;
        // First the condition, the newest and least needed part (where a disk is matters
        // more than how it is): its reasons, then the rest of it.
        if size > budget && d.health.as_ref().is_some_and(|h| !h.reasons.is_empty()) {
            if let Some(h) = d.health.as_mut() {
                h.reasons.clear();
            }
            size = wire_size(&d);
        }
        if size > budget && (d.health.is_some() || d.fs.is_some()) {
            d.health = None;
            d.fs = None;
            size = wire_size(&d);
        }
        while size > budget && !d.mountpoints.is_empty() {
            d.mountpoints.pop();
            size = wire_size(&d);
        }
        // Then what the hardware says, longest first: the disk matters more.
        if size > budget && d.hardware.backing_file.is_some() {
            d.hardware.backing_file = None;
            size = wire_size(&d);
        }
        if size > budget && !d.hardware.is_empty() {
            d.hardware = Hardware::default();
            size = wire_size(&d);
        }
        if size > budget {
            tracing::warn!(device = %d.device, "disk record does not fit in one datagram; left out");
            continue;
        }
        if used + size > budget || current.len() >= limits::DISKS_PER_CHUNK {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += size;
        current.push(d);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    let count = chunks.len().min(limits::CHUNKS as usize) as u16;
    let total: u32 = chunks
        .iter()
        .take(count as usize)
        .map(|c| c.len() as u32)
        .sum();
    chunks
        .into_iter()
        .take(count as usize)
        .enumerate()
        .map(|(i, disks)| Chunk {
            generation,
            index: i as u16,
            count,
            total,
            disks,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(body: Body) -> Envelope {
        Envelope {
            node_id: "0123456789abcdef0123456789abcdef".into(),
            node: "node-a".into(),
            boot: 7,
            seq: 1,
            sent_ms: 1_700_000_000_000,
            body,
        }
    }

    pub(crate) fn disk(i: usize) -> DiskRecord {
        DiskRecord {
            probe: Default::default(),
            uuid: Some(format!("{i:08x}-83a0-4e4a-af6a-f578ca7a1f65")),
            label: Some(format!("a rather long label for disk number {i} — Ürlaub")),
            device: format!("/dev/disk/by-id/ata-SAMSUNG_SSD_870_EVO_{i:06}-part1"),
            fstype: Some("ext4".into()),
            mountpoints: vec![format!("/srv/data/{i}")],
            hardware: Default::default(),
            health: None,
            fs: None,
        }
    }

    #[test]
    fn round_trip() {
        for body in [Body::Ping, Body::Goodbye] {
            let e = env(body);
            assert_eq!(decode(&encode(&e)).unwrap(), e);
        }
    }

    #[test]
    fn rejects_foreign_and_broken_datagrams() {
        assert_eq!(decode(b"diskd:---\n- - a\n"), Err(Reject::Legacy));
        assert_eq!(decode(b"hello"), Err(Reject::BadMagic));
        assert_eq!(decode(b"DSKD"), Err(Reject::BadVersion));
        assert_eq!(decode(b"DSKD\x09abc"), Err(Reject::BadVersion));
        assert_eq!(decode(b"DSKD\x01\xff\xff\xff"), Err(Reject::Undecodable));
        let full = encode(&env(Body::Ping));
        for cut in 5..full.len() {
            assert!(decode(&full[..cut]).is_err(), "truncated at {cut} decoded");
        }
        assert_eq!(decode(&vec![0u8; MAX_DATAGRAM + 1]), Err(Reject::Oversized));
        let mut e = env(Body::Ping);
        e.node_id = "xyz".into();
        assert_eq!(decode(&encode(&e)), Err(Reject::InvalidField));
        let mut e = env(Body::Ping);
        e.node = "evil\nname".into();
        assert_eq!(decode(&encode(&e)), Err(Reject::InvalidField));
        let mut d = disk(1);
        d.label = Some("x".repeat(limits::LABEL + 1));
        let e = env(Body::Inventory(Chunk {
            generation: 1,
            index: 0,
            count: 1,
            total: 1,
            disks: vec![d],
        }));
        assert_eq!(decode(&encode(&e)), Err(Reject::InvalidField));
        let e = env(Body::Inventory(Chunk {
            generation: 1,
            index: 3,
            count: 2,
            total: 0,
            disks: vec![],
        }));
        assert_eq!(decode(&encode(&e)), Err(Reject::BadChunk));
    }

    #[test]
    fn a_lying_length_prefix_does_not_allocate_its_claim() {
        // A disk list claiming 2^28 entries in a 20-byte datagram fails fast.
        let mut bytes = encode(&env(Body::Inventory(Chunk {
            generation: 1,
            index: 0,
            count: 1,
            total: 0,
            disks: vec![],
        })));
        bytes.pop();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(decode(&bytes), Err(Reject::Undecodable));
    }

    #[test]
    fn a_thousand_disks_fit_in_bounded_datagrams_and_all_arrive() {
        let disks: Vec<_> = (0..1000).map(disk).collect();
        let chunks = send_and_receive(&disks);
        assert!(chunks.len() > 50, "{} chunks", chunks.len());
        assert!(chunks
            .iter()
            .all(|c| c.total == 1000 && c.count as usize == chunks.len()));
    }

    /// Cut `disks` into chunks of datagrams of at most 1400 bytes, check every datagram's
    /// size and that decoding them all gives `disks` back; the chunks.
    fn send_and_receive(disks: &[DiskRecord]) -> Vec<Chunk> {
        let t = env(Body::Ping);
        let chunks = chunk_inventory(&t, 9, disks, 1400);
        let mut back = Vec::new();
        for c in &chunks {
            let e = Envelope {
                seq: u64::MAX,
                body: Body::Inventory(c.clone()),
                ..t.clone()
            };
            let bytes = encode(&e);
            assert!(bytes.len() <= 1400, "datagram of {} bytes", bytes.len());
            match decode(&bytes).unwrap().body {
                Body::Inventory(c) => back.extend(c.disks),
                _ => unreachable!(),
            }
        }
        assert_eq!(back, disks);
        chunks
    }

    /// A whole disk with everything sysfs can say.
    pub(crate) fn hardware(i: usize) -> Hardware {
        Hardware {
            size: Some(4_000_787_030_016 + i as u64),
            model: Some("ST4000DM004-2CV104".into()),
            vendor: Some("ATA".into()),
            serial: Some(format!("ZFN{i:05}")),
            wwn: Some(format!("naa.5000c500{i:08x}")),
            transport: Some("sata".into()),
            removable: Some(false),
            rotational: Some(true),
            parent: None,
            backing_file: None,
        }
    }

    fn inventory(disks: Vec<DiskRecord>) -> Envelope {
        env(Body::Inventory(Chunk {
            generation: 1,
            index: 0,
            count: 1,
            total: disks.len() as u32,
            disks,
        }))
    }

    #[test]
    fn hardware_travels_in_the_trailer_and_only_when_known() {
        let mut with = disk(1);
        with.hardware = hardware(1);
        let e = inventory(vec![with.clone(), disk(2)]);
        let bytes = encode(&e);
        assert_eq!(decode(&bytes).unwrap(), e);
        // Without hardware, not a byte more than revision 1.
        let plain = encode(&inventory(vec![disk(1), disk(2)]));
        assert!(bytes.starts_with(&plain));
        assert_eq!(bytes[plain.len()], TRAILER_HARDWARE);
        // A trailer from a later revision is ignored, as revision 1 ignores ours.
        let mut later = plain.clone();
        later.extend_from_slice(&[9, 1, 2, 3]);
        assert_eq!(decode(&later).unwrap(), inventory(vec![disk(1), disk(2)]));
        // Ours, but for another number of disks, or cut short: refused.
        let mut short = encode(&inventory(vec![with.clone()]));
        short.truncate(short.len() - 3);
        assert!(decode(&short).is_err());
        let mut other = plain.clone();
        other.push(TRAILER_HARDWARE);
        other.extend(postcard::to_allocvec(&vec![hardware(1)]).unwrap());
        assert_eq!(decode(&other), Err(Reject::BadChunk));
        // Hardware is bounded like every other field.
        for bad in [
            Hardware {
                serial: Some("x".repeat(limits::HARDWARE_TEXT + 1)),
                ..hardware(1)
            },
            Hardware {
                model: Some("evil\nmodel".into()),
                ..hardware(1)
            },
            Hardware {
                transport: Some("t".repeat(limits::TRANSPORT + 1)),
                ..hardware(1)
            },
        ] {
            let mut d = disk(1);
            d.hardware = bad;
            assert_eq!(
                decode(&encode(&inventory(vec![d]))),
                Err(Reject::InvalidField)
            );
        }
    }

    #[test]
    fn the_probe_travels_in_its_own_trailer_after_the_hardware() {
        let probes = [Probe::Empty, Probe::Failed, Probe::Signature];
        let mut disks: Vec<DiskRecord> = (0..3).map(disk).collect();
        for (d, p) in disks.iter_mut().zip(probes) {
            d.probe = p;
        }
        // With hardware: both trailers, hardware first.
        let mut with_hw = disks.clone();
        with_hw[0].hardware = hardware(0);
        let e = inventory(with_hw.clone());
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        // Without hardware: the probe trailer alone.
        let e = inventory(disks.clone());
        let bytes = encode(&e);
        assert_eq!(decode(&bytes).unwrap(), e);
        let plain: Vec<DiskRecord> = disks
            .iter()
            .map(|d| DiskRecord {
                probe: Probe::Unknown,
                ..d.clone()
            })
            .collect();
        let rev1 = encode(&inventory(plain.clone()));
        assert!(bytes.starts_with(&rev1));
        assert_eq!(&bytes[rev1.len()..], &[TRAILER_PROBE, 3, 2, 4, 1]);
        // An older peer's inventory (no probe trailer): every probe unknown.
        assert_eq!(decode(&rev1).unwrap(), inventory(plain.clone()));
        // A code from a later release is unknown, never blank; a list of another length,
        // or the same trailer twice, is refused.
        let mut later = rev1.clone();
        later.extend_from_slice(&[TRAILER_PROBE, 3, 200, 2, 9]);
        let Body::Inventory(c) = decode(&later).unwrap().body else {
            unreachable!()
        };
        let got: Vec<Probe> = c.disks.iter().map(|d| d.probe).collect();
        assert_eq!(got, [Probe::Unknown, Probe::Empty, Probe::Unknown]);
        let mut short = rev1.clone();
        short.extend_from_slice(&[TRAILER_PROBE, 2, 2, 2]);
        assert_eq!(decode(&short), Err(Reject::BadChunk));
        let mut twice = bytes.clone();
        twice.extend_from_slice(&[TRAILER_PROBE, 3, 2, 2, 2]);
        assert_eq!(decode(&twice), Err(Reject::BadChunk));
        // A later trailer after ours is ignored.
        let mut more = bytes.clone();
        more.extend_from_slice(&[9, 1, 2, 3]);
        assert_eq!(decode(&more).unwrap(), e);
    }

    #[test]
    fn disks_with_hardware_fit_in_bounded_datagrams() {
        let disks: Vec<_> = (0..300)
            .map(|i| DiskRecord {
                hardware: hardware(i),
                probe: Probe::from_code((i % 5) as u8),
                ..disk(i)
            })
            .collect();
        send_and_receive(&disks);
    }

    #[test]
    fn a_disk_whose_hardware_does_not_fit_a_small_datagram_goes_without_it() {
        let mut d = disk(1);
        d.hardware = hardware(1);
        d.hardware.backing_file = Some(format!("/{}", "b".repeat(limits::BACKING_FILE - 1)));
        let chunks = chunk_inventory(&env(Body::Ping), 1, &[d.clone()], MIN_DATAGRAM);
        assert_eq!(chunks[0].disks.len(), 1, "the disk is sent");
        let sent = &chunks[0].disks[0];
        assert_eq!(sent.hardware.backing_file, None);
        assert_eq!(sent.hardware.serial, d.hardware.serial, "what fits stays");
        let bytes = encode(&Envelope {
            body: Body::Inventory(chunks[0].clone()),
            ..env(Body::Ping)
        });
        assert!(bytes.len() <= MIN_DATAGRAM, "{} bytes", bytes.len());
    }

    #[test]
    fn hardware_that_would_be_refused_is_left_out_not_the_disk() {
        let mut d = disk(1);
        d.hardware.model = Some("m".repeat(limits::HARDWARE_TEXT + 1));
        let chunks = chunk_inventory(&env(Body::Ping), 1, &[d.clone()], 1400);
        assert_eq!(chunks[0].disks.len(), 1);
        assert!(chunks[0].disks[0].hardware.is_empty());
        assert_eq!(chunks[0].disks[0].device, d.device);
    }

    #[test]
    fn an_empty_inventory_is_one_empty_chunk() {
        let chunks = chunk_inventory(&env(Body::Ping), 1, &[], 1400);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].count, 1);
        assert!(chunks[0].disks.is_empty());
    }
}

/// Revision 4: the condition trailer.
#[cfg(test)]
mod condition_tests;

/// Datagrams written by the release before gossip (captured from its `encode`): they
/// decode the same, and encode to the same bytes, now that `Body` has a `Swim` variant (added
/// last, and only ever sent on the gossip socket, which older daemons do not listen on).
#[cfg(test)]
mod previous_release {
    use super::*;

    const PING: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13401";
    const GOODBYE: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13402";
    const INVENTORY: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b134000300010101012436666531373666622d303030302d343030302d383030302d30303030303030303030303101066261636b7570092f6465762f73646231010465787434010b2f7372762f6261636b7570";
    const MOUNT: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13403092066656463626139383736353433323130666564636261393837363534333231302436666531373666622d303030302d343030302d383030302d3030303030303030303030310100";

    #[test]
    fn datagrams_of_the_previous_release_decode_and_encode_unchanged() {
        for (hex_text, want) in [
            (PING, "ping"),
            (GOODBYE, "goodbye"),
            (INVENTORY, "inventory"),
            (MOUNT, "mount"),
        ] {
            let bytes = hex::decode(hex_text).unwrap();
            let env = decode(&bytes).unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(env.node, "old-node");
            let kind = match &env.body {
                Body::Ping => "ping",
                Body::Goodbye => "goodbye",
                Body::Inventory(c) => {
                    assert_eq!(c.disks[0].label.as_deref(), Some("backup"));
                    "inventory"
                }
                Body::MountRequest(r) => {
                    assert!(r.read_only);
                    "mount"
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(kind, want);
            assert_eq!(encode(&env), bytes, "{want}: the encoding changed");
        }
        // A revision-1 inventory has no trailer: its disks' hardware is unknown.
        let old = decode(&hex::decode(INVENTORY).unwrap()).unwrap();
        let Body::Inventory(c) = &old.body else {
            unreachable!()
        };
        assert!(c.disks[0].hardware.is_empty());
        // And the new variant is one an older daemon rejects as undecodable (counted),
        // never misreads: its index is past every older variant.
        let swim = Envelope {
            body: Body::Swim(Swim {
                generation: 1,
                data: vec![1, 2, 3],
            }),
            ..decode(&hex::decode(PING).unwrap()).unwrap()
        };
        assert_eq!(encode(&swim)[PING.len() / 2 - 1], 5);
    }
}

/// A daemon of the previous release reading this one's datagrams: its decoder, frozen
/// (the revision-1 types and `decode`'s checks as they were), must read an inventory that
/// carries hardware as the same disks without it. That is the mixed-version rule.
#[cfg(test)]
mod read_by_the_previous_release {
    use super::*;

    mod v1 {
        use serde::Deserialize;

        #[derive(Debug, Deserialize)]
        pub struct Envelope {
            pub node_id: String,
            pub node: String,
            pub boot: u64,
            pub seq: u64,
            pub sent_ms: u64,
            pub body: Body,
        }

        #[derive(Debug, Deserialize)]
        pub enum Body {
            Inventory(Chunk),
            Ping,
            Goodbye,
        }

        #[derive(Debug, Deserialize)]
        pub struct Chunk {
            pub generation: u64,
            pub index: u16,
            pub count: u16,
            pub total: u32,
            pub disks: Vec<Disk>,
        }

        #[derive(Debug, Deserialize, PartialEq)]
        pub struct Disk {
            pub uuid: Option<String>,
            pub label: Option<String>,
            pub device: String,
            pub fstype: Option<String>,
            pub mountpoints: Vec<String>,
        }

        /// `decode` of the previous release, without the field checks.
        pub fn decode(bytes: &[u8]) -> Option<Envelope> {
            let rest = bytes.strip_prefix(b"DSKD")?;
            let (&version, payload) = rest.split_first()?;
            if version != 1 {
                return None;
            }
            postcard::from_bytes(payload).ok()
        }
    }

    /// `decode` of revision 2 (the release before probes), its trailer handling frozen:
    /// the hardware trailer read with `from_bytes`, any other first trailer ignored.
    mod v2 {
        use serde::Deserialize;

        #[derive(Debug, Deserialize, PartialEq, Default)]
        pub struct Hardware {
            pub size: Option<u64>,
            pub model: Option<String>,
            pub vendor: Option<String>,
            pub serial: Option<String>,
            pub wwn: Option<String>,
            pub transport: Option<String>,
            pub removable: Option<bool>,
            pub rotational: Option<bool>,
            pub parent: Option<String>,
            pub backing_file: Option<String>,
        }

        /// The envelope's disks and their hardware (empty when there was no trailer).
        pub fn decode(bytes: &[u8]) -> Option<(Vec<super::v1::Disk>, Vec<Hardware>)> {
            let rest = bytes.strip_prefix(b"DSKD")?;
            let (&version, payload) = rest.split_first()?;
            if version != 1 {
                return None;
            }
            let (env, trailer): (super::v1::Envelope, &[u8]) =
                postcard::take_from_bytes(payload).ok()?;
            let super::v1::Body::Inventory(c) = env.body else {
                return None;
            };
            let hardware = match trailer.split_first() {
                Some((&2, rest)) => {
                    let h: Vec<Hardware> = postcard::from_bytes(rest).ok()?;
                    if h.len() != c.disks.len() {
                        return None;
                    }
                    h
                }
                _ => Vec::new(),
            };
            Some((c.disks, hardware))
        }
    }

    /// `decode` of revision 3 (the release before the condition trailer), its trailer
    /// handling frozen: hardware and probe trailers in any order, each at most once, until
    /// a tag it does not know.
    mod v3 {
        /// The envelope's disks, their hardware and their probe codes (each empty when
        /// its trailer was not there).
        pub fn decode(
            bytes: &[u8],
        ) -> Option<(Vec<super::v1::Disk>, Vec<super::v2::Hardware>, Vec<u8>)> {
            let rest = bytes.strip_prefix(b"DSKD")?;
            let (&version, payload) = rest.split_first()?;
            if version != 1 {
                return None;
            }
            let (env, mut rest): (super::v1::Envelope, &[u8]) =
                postcard::take_from_bytes(payload).ok()?;
            let super::v1::Body::Inventory(c) = env.body else {
                return None;
            };
            let (mut hardware, mut probes) = (Vec::new(), Vec::new());
            while let Some((&tag, body)) = rest.split_first() {
                match tag {
                    2 if hardware.is_empty() => {
                        let (h, after): (Vec<super::v2::Hardware>, &[u8]) =
                            postcard::take_from_bytes(body).ok()?;
                        if h.len() != c.disks.len() {
                            return None;
                        }
                        hardware = h;
                        rest = after;
                    }
                    3 if probes.is_empty() => {
                        let (p, after): (Vec<u8>, &[u8]) = postcard::take_from_bytes(body).ok()?;
                        if p.len() != c.disks.len() {
                            return None;
                        }
                        probes = p;
                        rest = after;
                    }
                    2 | 3 => return None,
                    _ => break,
                }
            }
            Some((c.disks, hardware, probes))
        }
    }

    /// Revision 4's condition trailer, read by revisions 3, 2 and 1: each sees the disks
    /// (and the trailers it knows) exactly as without it.
    #[test]
    fn older_releases_read_an_inventory_with_a_condition_as_before() {
        let mut disks: Vec<DiskRecord> = (0..3).map(super::tests::disk).collect();
        disks[0].health = Some(super::condition_tests::health(0));
        disks[2].fs = Some(crate::model::FsUsage {
            size: 100,
            used: 40,
            avail: 50,
        });
        let e = |disks: Vec<DiskRecord>| Envelope {
            node_id: "0123456789abcdef0123456789abcdef".into(),
            node: "new-node".into(),
            boot: 7,
            seq: 3,
            sent_ms: 1_700_000_000_000,
            body: Body::Inventory(Chunk {
                generation: 4,
                index: 0,
                count: 1,
                total: disks.len() as u32,
                disks,
            }),
        };
        // The condition alone; after the probe; after the hardware and the probe.
        let alone = disks.clone();
        let mut probed = disks.clone();
        probed[1].probe = Probe::Empty;
        let mut full = probed.clone();
        full[0].hardware = super::tests::hardware(0);
        for sent in [alone, probed, full] {
            let bytes = encode(&e(sent.clone()));
            let (got, hardware, probes) = v3::decode(&bytes).expect("revision 3 decodes it");
            let names: Vec<&str> = got.iter().map(|d| d.device.as_str()).collect();
            let want: Vec<&str> = sent.iter().map(|d| d.device.as_str()).collect();
            assert_eq!(names, want);
            let want_probes: Vec<u8> = sent.iter().map(|d| d.probe.code()).collect();
            if sent.iter().any(|d| d.probe != Probe::Unknown) {
                assert_eq!(probes, want_probes);
            } else {
                assert!(probes.is_empty());
            }
            if sent.iter().any(|d| !d.hardware.is_empty()) {
                assert_eq!(hardware[0].serial, sent[0].hardware.serial);
            } else {
                assert!(hardware.is_empty());
            }
            // Revision 2 reads the disks and the hardware the same; revision 1 the disks.
            let (got2, hardware2) = v2::decode(&bytes).expect("revision 2 decodes it");
            assert_eq!(got2, got);
            assert_eq!(hardware2, hardware);
            let Some(v1::Envelope {
                body: v1::Body::Inventory(c),
                ..
            }) = v1::decode(&bytes)
            else {
                panic!("revision 1 decodes it")
            };
            assert_eq!(c.disks, got);
        }
    }

    #[test]
    fn the_previous_release_reads_an_inventory_with_probes_as_before() {
        let mut disks: Vec<DiskRecord> = (0..3).map(super::tests::disk).collect();
        disks[0].probe = Probe::Empty;
        disks[1].probe = Probe::Failed;
        disks[2].probe = Probe::Signature;
        let e = |disks: Vec<DiskRecord>| Envelope {
            node_id: "0123456789abcdef0123456789abcdef".into(),
            node: "new-node".into(),
            boot: 7,
            seq: 3,
            sent_ms: 1_700_000_000_000,
            body: Body::Inventory(Chunk {
                generation: 4,
                index: 0,
                count: 1,
                total: disks.len() as u32,
                disks,
            }),
        };
        // With the hardware trailer before the probe trailer, and without it.
        let mut with_hw = disks.clone();
        with_hw[1].hardware = super::tests::hardware(1);
        for sent in [with_hw, disks] {
            let bytes = encode(&e(sent.clone()));
            let (got, hardware) = v2::decode(&bytes).expect("revision 2 decodes it");
            let names: Vec<&str> = got.iter().map(|d| d.device.as_str()).collect();
            let want: Vec<&str> = sent.iter().map(|d| d.device.as_str()).collect();
            assert_eq!(names, want);
            if sent.iter().any(|d| !d.hardware.is_empty()) {
                assert_eq!(hardware.len(), 3);
                assert_eq!(hardware[1].serial, sent[1].hardware.serial);
                assert_eq!(hardware[0], v2::Hardware::default());
            } else {
                assert!(hardware.is_empty());
            }
            // And revision 1 still reads the disks.
            let Some(old) = v1::decode(&bytes) else {
                panic!("revision 1 decodes it")
            };
            let v1::Body::Inventory(c) = old.body else {
                panic!("{:?}", old.body)
            };
            assert_eq!(c.disks.len(), 3);
        }
    }

    #[test]
    fn an_older_daemon_reads_a_newer_inventory_without_the_hardware() {
        let disks: Vec<DiskRecord> = (0..3)
            .map(|i| DiskRecord {
                hardware: super::tests::hardware(i),
                ..super::tests::disk(i)
            })
            .collect();
        let e = Envelope {
            node_id: "0123456789abcdef0123456789abcdef".into(),
            node: "new-node".into(),
            boot: 7,
            seq: 3,
            sent_ms: 1_700_000_000_000,
            body: Body::Inventory(Chunk {
                generation: 4,
                index: 0,
                count: 1,
                total: 3,
                disks: disks.clone(),
            }),
        };
        let old = v1::decode(&encode(&e)).expect("the previous release decodes it");
        assert_eq!((old.node.as_str(), old.seq), ("new-node", 3));
        let v1::Body::Inventory(c) = old.body else {
            panic!("{:?}", old.body)
        };
        assert_eq!((c.generation, c.index, c.count, c.total), (4, 0, 1, 3));
        let want: Vec<v1::Disk> = disks
            .iter()
            .map(|d| v1::Disk {
                uuid: d.uuid.clone(),
                label: d.label.clone(),
                device: d.device.clone(),
                fstype: d.fstype.clone(),
                mountpoints: d.mountpoints.clone(),
            })
            .collect();
        assert_eq!(c.disks, want);
        let _ = (old.node_id, old.boot, old.sent_ms);
        // And a ping is still a ping to it.
        let ping = Envelope {
            body: Body::Ping,
            ..e
        };
        assert!(matches!(
            v1::decode(&encode(&ping)).map(|e| e.body),
            Some(v1::Body::Ping)
        ));
    }
}
