//! Writers of the previous schemas' values, for the migration tests (a store of each
//! release is made with them, then opened by this one).

use super::*;
use crate::store::layout::HostView;

/// A schema-3 value of `host` (its disks' hardware left out), framed and split as schema 3
/// stored it: what the previous release would have written. For tests.
pub(in crate::store) fn encode_v3(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    let v3 = HostV3 {
        host: host.host,
        addr: host.addr,
        entries: host
            .entries
            .iter()
            .map(|e| EntryV3 {
                disk: DiskV3 {
                    uuid: e.disk.uuid,
                    label: e.disk.label,
                    device: e.disk.device,
                    fstype: e.disk.fstype,
                    mountpoints: e.disk.mountpoints.clone(),
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
        &postcard::to_allocvec(&v3).expect("encodes"),
        0,
        chunk_bytes,
    )
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

/// A schema-4 value of `host` (its disks' probes left out), framed and split as schema 4
/// stored it: what the previous release would have written. For tests.
pub(in crate::store) fn encode_v4(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    let v4 = HostV4 {
        host: host.host,
        addr: host.addr,
        entries: host
            .entries
            .iter()
            .map(|e| {
                let h = &e.disk.hardware;
                EntryV4 {
                    disk: DiskV4 {
                        uuid: e.disk.uuid,
                        label: e.disk.label,
                        device: e.disk.device,
                        fstype: e.disk.fstype,
                        mountpoints: e.disk.mountpoints.clone(),
                        hardware: HardwareV4 {
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
                        },
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
                }
            })
            .collect(),
    };
    split_marked(
        &postcard::to_allocvec(&v4).expect("encodes"),
        FRAME_V4,
        chunk_bytes,
    )
}

/// A schema-5 value of `host` (its disks' health and usage and its readings left out),
/// framed and split as schema 5 stored it: what the previous release would have written.
/// For tests.
pub(in crate::store) fn encode_v5(host: &HostView<'_>, chunk_bytes: usize) -> Vec<Vec<u8>> {
    let v5 = HostV5 {
        host: host.host,
        addr: host.addr,
        entries: host
            .entries
            .iter()
            .map(|e| {
                let h = &e.disk.hardware;
                EntryV5 {
                    disk: DiskV5 {
                        uuid: e.disk.uuid,
                        label: e.disk.label,
                        device: e.disk.device,
                        fstype: e.disk.fstype,
                        mountpoints: e.disk.mountpoints.clone(),
                        hardware: HardwareV4 {
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
                        },
                        probe: e.disk.probe,
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
                }
            })
            .collect(),
    };
    split_marked(
        &postcard::to_allocvec(&v5).expect("encodes"),
        FRAME_V5,
        chunk_bytes,
    )
}
