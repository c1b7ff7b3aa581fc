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
    // postcard cannot fail on these types (no maps with non-string keys, no floats); an
    // error would be a bug in our own types, so fall back to an empty payload that every
    // receiver rejects rather than panic.
    encode_or_fail(env).unwrap_or_else(|_| MAGIC.to_vec())
}

/// [`encode`], or postcard's error from any of its parts.
fn encode_or_fail(env: &Envelope) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let mut out = postcard::to_extend(env, out)?;
    let Body::Inventory(c) = &env.body else {
        return Ok(out);
    };
    // Only when some disk has hardware: an inventory without any is revision 1 to the
    // byte, and costs no trailer.
    if c.disks.iter().any(|d| !d.hardware.is_empty()) {
        out.push(TRAILER_HARDWARE);
        let hardware: Vec<&Hardware> = c.disks.iter().map(|d| &d.hardware).collect();
        out = postcard::to_extend(&hardware, out)?;
    }
    // After the hardware, which a revision-2 reader takes and stops at; only when some
    // disk's probe is known.
    if c.disks.iter().any(|d| d.probe != Probe::Unknown) {
        out.push(TRAILER_PROBE);
        let codes: Vec<u8> = c.disks.iter().map(|d| d.probe.code()).collect();
        out = postcard::to_extend(&codes, out)?;
    }
    // Last, after what a revision-3 reader takes; only when some disk's condition is known.
    if any_condition(c.disks.iter()) {
        out = append_condition(out, &c.disks)?;
    }
    Ok(out)
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
                let (hardware, after) = take_list::<Hardware>(body, c.disks.len())?;
                for (d, h) in c.disks.iter_mut().zip(hardware) {
                    d.hardware = h;
                }
                hardware_seen = true;
                rest = after;
            }
            TRAILER_PROBE if !probe_seen => {
                let (codes, after) = take_list::<u8>(body, c.disks.len())?;
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

/// A trailer's list (the bytes after its tag), one entry per disk of the chunk, and the
/// bytes after it: `Undecodable` when it does not decode, `BadChunk` when it has another
/// length than the chunk's disks.
fn take_list<'b, T: Deserialize<'b>>(
    body: &'b [u8],
    disks: usize,
) -> Result<(Vec<T>, &'b [u8]), Reject> {
    let (list, after): (Vec<T>, &[u8]) =
        postcard::take_from_bytes(body).map_err(|_| Reject::Undecodable)?;
    if list.len() != disks {
        return Err(Reject::BadChunk);
    }
    Ok((list, after))
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
mod tests;

/// Revision 4: the condition trailer.
#[cfg(test)]
mod condition_tests;
