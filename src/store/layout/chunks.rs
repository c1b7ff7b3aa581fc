//! A host's value in sled: cut into chunks of at most `CHUNK_BYTES` under keys
//! `node id, 0xFF, index`, chunk 0 framed with the count and the schema's mark.

use super::*;

/// Marks chunk 0 of a schema-4 value: the high bit of its chunk count (see the module
/// documentation).
pub(in crate::store) const FRAME_V4: u32 = 1 << 31;

/// Marks chunk 0 of a schema-5 value: the two high bits of its chunk count.
pub(in crate::store) const FRAME_V5: u32 = FRAME_V4 | 1 << 30;

/// Marks chunk 0 of a schema-6 value: the second high bit of its chunk count alone (see
/// the module documentation).
pub(in crate::store) const FRAME_V6: u32 = 1 << 30;

/// The bits of a chunk count that are marks, not the count.
pub(in crate::store) const FRAME_MARKS: u32 = FRAME_V4 | FRAME_V6;

/// The mark of `chunk0`'s count (0 for schema 3, `FRAME_V4`, `FRAME_V5`, `FRAME_V6`);
/// `None` when it has no count.
pub(in crate::store) fn frame_mark(chunk0: &[u8]) -> Option<u32> {
    chunk0
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u32::from_be_bytes(b) & FRAME_MARKS)
}

/// Whether `chunk0` is the first chunk of a value of this schema (6).
#[cfg(test)]
pub(in crate::store) fn is_current(chunk0: &[u8]) -> bool {
    frame_mark(chunk0) == Some(FRAME_V6)
}

/// A host's value from its stored chunks (in order), as one buffer framed like chunk 0
/// (the chunk itself when there is only one: shared with sled, not copied); `None` when
/// they do not make a schema-6 value (an older schema's value is never read as one).
pub(in crate::store) fn join_chunks(chunks: &[sled::IVec]) -> Option<sled::IVec> {
    join_framed(chunks, FRAME_V6)
}

/// [`join_chunks`] for a value whose chunk count carries `mark` (`FRAME_V6`, `FRAME_V5`,
/// `FRAME_V4`, or 0 for a schema-3 value).
pub(in crate::store) fn join_framed(chunks: &[sled::IVec], mark: u32) -> Option<sled::IVec> {
    let first = chunks.first()?;
    let count = u32::from_be_bytes(first.get(..4)?.try_into().ok()?);
    if count & FRAME_MARKS != mark {
        return None;
    }
    let n = (count & !FRAME_MARKS) as usize;
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
pub(in crate::store) fn unframed(bytes: &[u8]) -> &[u8] {
    bytes.get(4..).unwrap_or(&[])
}

/// `bytes` behind a 4-byte frame, as chunk 0 has (marked v6, with a meaningless count:
/// only `unframed` reads it).
pub(in crate::store) fn framed(bytes: &[u8]) -> sled::IVec {
    let mut v = Vec::with_capacity(bytes.len() + 4);
    v.extend_from_slice(&FRAME_V6.to_be_bytes());
    v.extend_from_slice(bytes);
    sled::IVec::from(v)
}

/// Split an encoded value into chunks, the first one prefixed with their number (marked
/// `FRAME_V6`).
pub(in crate::store) fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let first_len = bytes.len().min(CHUNK_BYTES - 4);
    let rest = &bytes[first_len..];
    let n = 1 + rest.len().div_ceil(CHUNK_BYTES);
    let mut out = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(first_len + 4);
    first.extend_from_slice(&(n as u32 | FRAME_V6).to_be_bytes());
    first.extend_from_slice(&bytes[..first_len]);
    out.push(first);
    out.extend(rest.chunks(CHUNK_BYTES).map(<[u8]>::to_vec));
    out
}

/// Key of chunk `i` of a host.
pub(in crate::store) fn chunk_key(node_id: &str, i: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(node_id.len() + 5);
    k.extend_from_slice(node_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// The node id and chunk number of a `hosts` key.
pub(in crate::store) fn parse_chunk_key(key: &[u8]) -> Option<(&str, u32)> {
    if key.len() < 6 || key[key.len() - 5] != 0 {
        return None;
    }
    let (id, rest) = key.split_at(key.len() - 5);
    let i = u32::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(id).ok()?, i))
}
