//! Before sled opens a store: is its log readable at all? sled 0.34 treats a data file
//! without one valid segment as an empty log and starts a new one over it, which would
//! lose every stored disk without a word; this check refuses to open such a file instead.

use std::path::Path;

use super::StoreError;

/// Refuse a data file that sled 0.34 would silently start afresh over.
///
/// sled scans the segment headers of its log (`db`) at open; when not one has a valid
/// checksum it takes the log for new and zeroes it, inside `open`, before the caller can
/// look at what was recovered. So a store whose `db` was overwritten with garbage would
/// lose its data and node id without a word. This looks first, the way sled does: a `db`
/// long enough to hold a segment header must have at least one valid header, unless every
/// header is still all zeroes (a log sled made but never wrote: nothing to lose). Anything
/// this cannot judge (no `db`, no readable `conf`) is left to sled.
pub(super) fn check_log_readable(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    /// sled 0.34's segment header: crc32 (xor 0xFFFF_FFFF) of the next 16 bytes, the lsn
    /// and the max stable lsn.
    const SEG_HEADER_LEN: u64 = 20;
    /// sled 0.34's default `segment_size`, which it uses when `conf` does not exist.
    const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024;

    let Ok(mut file) = std::fs::File::open(path.join("db")) else {
        return Ok(());
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Ok(());
    };
    let segment_size = match std::fs::read(path.join("conf")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_SEGMENT_SIZE,
        Err(_) => return Ok(()),
        // sled's format: "segment_size: N\n..." then a 4-byte crc; a conf this short is
        // ignored and rewritten by sled.
        Ok(conf) if conf.len() <= 8 => DEFAULT_SEGMENT_SIZE,
        Ok(conf) => {
            let text = String::from_utf8_lossy(&conf[..conf.len() - 4]).into_owned();
            match text
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) if n >= SEG_HEADER_LEN => n,
                // sled itself refuses a conf it cannot parse.
                _ => return Ok(()),
            }
        }
    };
    // The same count of segments sled scans.
    let segments = len / segment_size + u64::from(len % segment_size >= SEG_HEADER_LEN);
    let mut all_zero = true;
    for i in 0..segments {
        let mut header = [0u8; SEG_HEADER_LEN as usize];
        if file.read_exact_at(&mut header, i * segment_size).is_err() {
            continue;
        }
        let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if stored ^ 0xFFFF_FFFF == crc32fast::hash(&header[4..]) {
            return Ok(());
        }
        all_zero &= header.iter().all(|&b| b == 0);
    }
    if segments == 0 || all_zero {
        return Ok(());
    }
    // Say a little about what is there, for the operator.
    let mut head = [0u8; 8];
    let n = file.read(&mut head).unwrap_or(0);
    Err(StoreError::Unreadable {
        path: path.to_path_buf(),
        detail: format!(
            "the data file db ({len} bytes, starting {:02x?}) has no valid sled segment; it is corrupt or not a sled log",
            &head[..n]
        ),
    })
}
