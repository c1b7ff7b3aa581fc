//! The warm-start image: what a clean shutdown leaves beside sled, so that the next start
//! reads one file instead of walking sled and decoding every host value. At 160,000
//! records the walk and decode take most of a restart (see BENCHMARKS.md); the image holds
//! the same host values with their index terms already computed.
//!
//! The image is only ever a copy of what sled holds, and it is trusted only when all of
//! these hold, else the store is loaded from sled as always:
//! - sled's meta tree holds the image's token. The shutdown writes the token and flushes
//!   sled after the last write, then writes the image; every open removes the token before
//!   anything else is written, so an image never outlives the next write.
//! - sled's log file has the size and modification time it had right after that flush, so
//!   a write by a program that does not know of the image (an older diskd) voids it too.
//! - the same build wrote it (commit and version), and the terms of a sample of its hosts
//!   are what this build computes from their values;
//! - the file is whole: its magic, schema version and CRC-32 check out.
//!
//! Every open that gets past sled's removes the file, used or not (a store that is refused
//! keeps every file). A daemon whose tasks did not all stop in time writes no image (a
//! straggler could write after it).

use super::*;

use std::io::{BufReader, BufWriter, Read, Write};

/// The image's name in the store directory.
const FILE: &str = "warm-start";
/// Bumped with any change to the layout below or to how index terms are computed
/// (`HostView::terms`), which no schema version covers: the index lives in memory only.
const MAGIC: &[u8; 8] = b"DISKDWS2";
/// The build that wrote an image must be the one that reads it (the commit with the
/// crate version, see build.rs).
const BUILD: &str = env!("DISKD_LONG_VERSION");
/// Every this many hosts, the terms an image holds are checked against the terms of the
/// value it holds: a build whose terms differ without a new `MAGIC` (a local change) is
/// caught, at about a thousandth of the decoding a cold start does.
const CHECK_EVERY: usize = 1024;
/// Where sled's meta tree keeps the token of the image that matches it.
pub(super) const KEY_TOKEN: &[u8] = b"warm_start_token";
/// Bounds checked before anything read is allocated (an image is ours, but a damaged one
/// must not make a start allocate gigabytes).
const MAX_NAME: usize = 4096;
const MAX_VALUE: usize = 64 << 20;
const MAX_TERMS: usize = 1 << 20;
/// Hosts handed to the index thread at once.
const BATCH: usize = 128;

// The layout, every integer big-endian, every name a u16 length and UTF-8, every byte
// string a u32 length and its bytes:
//   magic, schema u32, token u64, log length u64, log modification time u64 (ns),
//   the diskd version (name),
//   hosts u32, their terms in all u32 (to size the index once),
//     each host: node id (name), entries u32, value (bytes: framed as chunk 0 is),
//     terms u32 and each term u64 (sorted, `HostView::terms`),
//   chunk counts u32, each: node id (name), keys u32 (every host sled holds, also those
//     whose value did not decode),
//   peers u32, each: node id (name), its record as sled holds it (bytes),
//   CRC-32 u32 of everything before it.

/// The size and modification time (ns) of sled's log file: what changes when anything
/// writes to the store.
pub(super) fn log_stamp(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(dir.join("db")).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((meta.len(), u64::try_from(mtime.as_nanos()).ok()?))
}

/// A reader that checksums what it reads.
struct Input<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Option<()> {
        self.inner.read_exact(buf).ok()?;
        self.crc.update(buf);
        Some(())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.exact(&mut b)?;
        Some(b)
    }

    fn u16(&mut self) -> Option<usize> {
        Some(u16::from_be_bytes(self.array()?).into())
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    /// `len` bytes into `buf`, when `len` is at most `max`.
    fn bytes(&mut self, len: usize, max: usize, buf: &mut Vec<u8>) -> Option<()> {
        if len > max {
            return None;
        }
        buf.resize(len, 0);
        self.exact(buf)
    }

    fn name(&mut self, buf: &mut Vec<u8>) -> Option<String> {
        let len = self.u16()?;
        self.bytes(len, MAX_NAME, buf)?;
        String::from_utf8(buf.clone()).ok()
    }

    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }
}

/// A writer that checksums what it writes.
struct Output<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Output<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    fn name(&mut self, s: &str) -> std::io::Result<()> {
        let len = u16::try_from(s.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        self.put(&len.to_be_bytes())?;
        self.put(s.as_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.count(b.len())?;
        self.put(b)
    }

    fn count(&mut self, n: usize) -> std::io::Result<()> {
        let n = u32::try_from(n).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        self.put(&n.to_be_bytes())
    }
}

/// The in-memory part of the store built from an image while sled opens, waiting for the
/// token check.
pub(super) struct Warm {
    token: u64,
    loaded: Loaded,
}

impl Warm {
    /// What the image holds, if `token` (what sled's meta tree holds) is the image's own.
    pub(super) fn accept(self, token: Option<&sled::IVec>) -> Option<Loaded> {
        if token.map(|t| &t[..]) != Some(&self.token.to_be_bytes()[..]) {
            tracing::debug!("warm-start image does not match the store's token; ignored");
            return None;
        }
        Some(self.loaded)
    }
}

/// Read the image in `dir` and build the store's in-memory part from it, if there is one
/// that may still be current: `stamp` is [`log_stamp`] taken before sled opened. This is
/// the work of a warm start, done while sled opens: the file is streamed (never held
/// whole), the values copied out on this thread while another builds the index. Never
/// fails: an image that cannot be used is only a slower start.
pub(super) fn prepare(dir: &Path, stamp: Option<(u64, u64)>) -> Option<Warm> {
    let file = std::fs::File::open(dir.join(FILE)).ok()?;
    // Removed by the open once sled has opened (`remove_image`), used or not; a store
    // that is refused keeps every file as it was. No count read from the file may size
    // anything beyond what the file can hold.
    let file_len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    let mut input = Input {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let mut buf = Vec::new();
    if &input.array::<8>()? != MAGIC || input.u32()? != SCHEMA_VERSION {
        tracing::debug!("warm-start image of another format; ignored");
        return None;
    }
    let token = input.u64()?;
    if stamp != Some((input.u64()?, input.u64()?)) {
        tracing::debug!("the store was written after its warm-start image; image ignored");
        return None;
    }
    if input.name(&mut buf)? != BUILD {
        tracing::debug!("warm-start image written by another diskd; ignored");
        return None;
    }
    let (hosts, all_terms) = (input.count()?, input.count()?);
    // A host takes at least 14 bytes (two names, three counts), a term 8.
    if hosts > file_len / 14 || all_terms > file_len / 8 {
        return None;
    }
    let (states, index) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u32, Vec<u64>)>>(4);
        let indexer = std::thread::Builder::new()
            .name("store-index".into())
            .spawn_scoped(scope, move || {
                let mut index = Memory::default();
                index.index.reserve(all_terms);
                for (slot, terms) in rx.into_iter().flatten() {
                    for t in terms {
                        index.index_add(t, slot);
                    }
                }
                index
            });
        // Without a second thread (the system refused one) this one indexes as it reads.
        let mut inline = Memory::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut states = Vec::with_capacity(hosts);
        let read = (|| -> Option<()> {
            for slot in 0..hosts {
                let id = input.name(&mut buf)?;
                let entries = input.count()?;
                let len = input.count()?;
                input.bytes(len, MAX_VALUE, &mut buf)?;
                let value = sled::IVec::from(&buf[..]);
                let n = input.count()?;
                input.bytes(n.checked_mul(8)?, MAX_TERMS * 8, &mut buf)?;
                let terms: Vec<u64> = buf
                    .chunks_exact(8)
                    .map(|c| {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(c);
                        u64::from_be_bytes(t)
                    })
                    .collect();
                let state = HostState::new(Arc::from(id), value, entries);
                if slot % CHECK_EVERY == 0 && state.view().terms() != terms {
                    tracing::debug!("warm-start image terms differ from this build's; ignored");
                    return None;
                }
                states.push(Arc::new(state));
                let slot = u32::try_from(slot).ok()?;
                match &indexer {
                    Ok(_) => {
                        batch.push((slot, terms));
                        if batch.len() == BATCH {
                            tx.send(std::mem::take(&mut batch)).ok()?;
                        }
                    }
                    Err(_) => terms.iter().for_each(|&t| inline.index_add(t, slot)),
                }
            }
            if !batch.is_empty() {
                tx.send(batch).ok()?;
            }
            Some(())
        })();
        drop(tx);
        let index = match indexer {
            // An indexer that panicked is a bug: it stops the start loudly.
            Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => inline,
        };
        read.map(|()| (states, index))
    })?;
    let mut chunks = HashMap::new();
    for _ in 0..input.count()? {
        let id = input.name(&mut buf)?;
        chunks.insert(id, input.u32()?);
    }
    let mut peers = BTreeMap::new();
    for _ in 0..input.count()? {
        let id = input.name(&mut buf)?;
        let len = input.count()?;
        input.bytes(len, MAX_VALUE, &mut buf)?;
        if let Some(p) = decode::<PeerRecord>(&buf) {
            peers.insert(id, p);
        }
    }
    let crc = input.crc.clone().finalize();
    let mut trailer = [0u8; 4];
    input.inner.read_exact(&mut trailer).ok()?;
    let at_end = input.inner.read(&mut [0u8; 1]).ok()? == 0;
    if u32::from_be_bytes(trailer) != crc || !at_end {
        tracing::debug!(
            "warm-start image in {} is not whole; ignored",
            dir.display()
        );
        return None;
    }
    let mem = Memory {
        hosts: states
            .iter()
            .enumerate()
            .map(|(slot, h)| (h.node_id.clone(), slot as u32))
            .collect(),
        sightings: states.iter().map(|h| h.len).sum(),
        slots: states.into_iter().map(Some).collect(),
        ..index
    };
    let loaded = Loaded {
        mem,
        peers,
        // Read from sled by the caller, like the rest of meta.
        local_seen: NONE,
        chunks,
        from_image: true,
    };
    Some(Warm { token, loaded })
}

/// Remove the image file and any half-written one (after every open: the image is either
/// loaded or stale).
pub(super) fn remove_image(dir: &Path) {
    for name in [FILE.to_string(), format!("{FILE}.tmp")] {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", dir.join(name).display()),
        }
    }
}

impl Store {
    /// Write the warm-start image (see this module), for a daemon that stops cleanly: its
    /// next start reads it instead of walking the whole store. Call it last, after the final
    /// flush; a write after it voids the image (that write is what sled then holds). Does
    /// nothing for a store in memory or one that cannot write.
    pub fn save_warm_start(&self) -> Result<(), StoreError> {
        if self.inner.volatile || !self.health().is_ok() {
            return Ok(());
        }
        // No write may come between the token and the image.
        let _local = lock(&self.inner.local_writer);
        let _peer = lock(&self.inner.peer_writer);
        if !self.health().is_ok() {
            return Ok(());
        }
        let s = self.sled()?;
        let token: u64 = rand::random();
        s.meta.insert(KEY_TOKEN, &token.to_be_bytes())?;
        s.db.flush()?;
        let Some((log_len, log_mtime)) = log_stamp(&self.inner.path) else {
            return Ok(());
        };
        let peers: Vec<(String, Vec<u8>)> = read(&self.inner.peers)
            .iter()
            .map(|(id, p)| Ok((id.clone(), encode(p)?)))
            .collect::<Result<_, StoreError>>()?;
        let chunks: Vec<(String, u32)> = lock(&self.inner.chunks)
            .iter()
            .map(|(id, &n)| (id.clone(), n))
            .collect();
        let hosts: Vec<Arc<HostState>> = read(&self.inner.mem).all();
        // Written whole under another name, then renamed: a reader sees all of it or none.
        let tmp = self.inner.path.join(format!("{FILE}.tmp"));
        let written = (|| -> std::io::Result<()> {
            let mut out = Output {
                inner: BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?),
                crc: crc32fast::Hasher::new(),
            };
            out.put(MAGIC)?;
            out.put(&SCHEMA_VERSION.to_be_bytes())?;
            for v in [token, log_len, log_mtime] {
                out.put(&v.to_be_bytes())?;
            }
            out.name(BUILD)?;
            let terms: Vec<Vec<u64>> = hosts.iter().map(|h| h.view().terms()).collect();
            out.count(hosts.len())?;
            out.count(terms.iter().map(Vec::len).sum())?;
            for (h, terms) in hosts.iter().zip(terms) {
                out.name(&h.node_id)?;
                out.count(h.len)?;
                out.bytes(h.bytes())?;
                out.count(terms.len())?;
                for t in terms {
                    out.put(&t.to_be_bytes())?;
                }
            }
            out.count(chunks.len())?;
            for (id, n) in &chunks {
                out.name(id)?;
                out.put(&n.to_be_bytes())?;
            }
            out.count(peers.len())?;
            for (id, v) in &peers {
                out.name(id)?;
                out.bytes(v)?;
            }
            let crc = out.crc.clone().finalize();
            out.inner.write_all(&crc.to_be_bytes())?;
            out.inner.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, self.inner.path.join(FILE))
        })();
        if written.is_err() {
            // A full disk: nothing half written stays behind.
            remove_image(&self.inner.path);
        }
        written.map_err(|e| StoreError::Sled(sled::Error::Io(e)))
    }
}

#[cfg(test)]
mod tests;
