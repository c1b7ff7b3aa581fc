//! Writers of the previous schemas' values, for the migration tests (a store of each
//! release is made with them, then opened by this one).

use super::*;
use crate::store::layout::{DiskView, HardwareView, HostView};

/// A schema-3 value of `host` (its disks' hardware left out), framed and split as schema 3
/// stored it: what the previous release would have written. For tests.
pub(in crate::store) fn encode_v3(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    encode_old(host, |_| (), 0, chunk_bytes)
}

/// A schema-4 value of `host` (its disks' probes left out), framed and split as schema 4
/// stored it: what the previous release would have written. For tests.
pub(in crate::store) fn encode_v4(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    encode_old(host, |d| hardware_v4(&d.hardware), FRAME_V4, chunk_bytes)
}

/// A schema-5 value of `host` (its disks' health and usage and its readings left out),
/// framed and split as schema 5 stored it: what the previous release would have written.
/// For tests.
pub(in crate::store) fn encode_v5(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    encode_old(
        host,
        |d| AddedV5 {
            hardware: hardware_v4(&d.hardware),
            probe: d.probe,
        },
        FRAME_V5,
        chunk_bytes,
    )
}

/// A schema-3, 4 or 5 value of `host`, each disk's tail made by `added`, framed with
/// `mark` and split.
fn encode_old<'a, A: serde::Serialize>(
    host: &HostView<'a>,
    added: impl Fn(&DiskView<'a>) -> A,
    mark: u32,
    chunk_bytes: usize,
) -> Vec<Vec<u8>> {
    let old = HostOld {
        host: host.host,
        addr: host.addr,
        entries: host
            .entries
            .iter()
            .map(|e| EntryOld {
                disk: DiskOld {
                    uuid: e.disk.uuid,
                    label: e.disk.label,
                    device: e.disk.device,
                    fstype: e.disk.fstype,
                    mountpoints: e.disk.mountpoints.clone(),
                    added: added(&e.disk),
                },
                present: e.present,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                since: e.since,
                dup: e.dup,
                place: e.place,
                past: e
                    .past
                    .iter()
                    .map(|p| PastStayV3 {
                        host: p.host,
                        addr: p.addr,
                        device: p.device,
                        label: p.label,
                        first_seen: p.first_seen,
                        last_seen: p.last_seen,
                    })
                    .collect(),
            })
            .collect(),
    };
    split_marked(
        &postcard::to_allocvec(&old).expect("encodes"),
        mark,
        chunk_bytes,
    )
}

/// A hardware as schemas 4 and 5 stored it.
fn hardware_v4<'a>(h: &HardwareView<'a>) -> HardwareV4<'a> {
    HardwareV4 {
        size: h.size,
        model: h.model,
        vendor: h.vendor,
        serial: h.serial,
        wwn: h.wwn,
        transport: h.transport,
        removable: h.removable,
        rotational: h.rotational,
        parent: h.parent,
        backing_file: h.backing_file,
    }
}

/// `bytes` in chunks of `chunk_bytes`, chunk 0 starting with their count marked `mark`:
/// how schemas 3 to 5 framed a value.
fn split_marked(bytes: &[u8], mark: u32, chunk_bytes: usize) -> Vec<Vec<u8>> {
    let first_len = bytes.len().min(chunk_bytes - 4);
    let rest = &bytes[first_len..];
    let n = 1 + rest.len().div_ceil(chunk_bytes);
    let mut first = (n as u32 | mark).to_be_bytes().to_vec();
    first.extend_from_slice(&bytes[..first_len]);
    let mut out = vec![first];
    out.extend(rest.chunks(chunk_bytes).map(<[u8]>::to_vec));
    out
}
