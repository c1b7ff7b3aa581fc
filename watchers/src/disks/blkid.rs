//! blkid's output, both forms it prints (`-o export` and the plain `DEV: KEY="VALUE"`
//! lines), with the escapes each uses decoded, read into records. Any input gives a result:
//! what cannot be read is counted and skipped.

use super::*;

/// A value longer than this cannot be a real UUID, label or type (labels are at most a few
/// hundred bytes on any filesystem); a record carrying one is garbage, not a disk.
pub(super) const MAX_VALUE_LEN: usize = 4096;

/// Parses blkid output in either the default form (`DEV: KEY="value" ...`, one device a
/// line) or the `-o export` form (`KEY=value` lines, blocks separated by blank lines),
/// detected line by line, so the parser works whatever command the operator configured.
///
/// Labels are decoded from blkid's escaping (backslash escapes, `\xHH`, octal `\NNN`, and
/// the `M-` notation blkid uses for non-ASCII bytes unless run with `-d`) into UTF-8,
/// replacing invalid bytes. Unparsable lines and records without a device are skipped, so
/// one odd line does not hide every other disk; only output with content but not a single
/// usable record is an error.
pub fn parse_blkid(output: &str) -> Result<Vec<DiskInfo>, WatchError> {
    let (disks, skipped) = parse_blkid_counted(output);
    if skipped > 0 {
        tracing::debug!(
            skipped,
            parsed = disks.len(),
            "skipped unparsable blkid output"
        );
    }
    if disks.is_empty() && !output.trim().is_empty() {
        return Err(WatchError::BadOutput(format!(
            "no device record in blkid output ({skipped} unparsable lines or records)"
        )));
    }
    Ok(disks)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Form {
    Plain,
    Export,
}

#[derive(Default)]
pub(super) struct Record {
    pub(super) device: Option<String>,
    pub(super) uuid: Option<String>,
    pub(super) label: Option<String>,
    pub(super) fstype: Option<String>,
    pub(super) too_long: bool,
    pub(super) has_fields: bool,
}

impl Record {
    pub(super) fn set(&mut self, key: &str, raw: &str, form: Form) {
        self.has_fields = true;
        if raw.len() > MAX_VALUE_LEN {
            self.too_long = true;
            return;
        }
        let slot = match (key, form) {
            ("UUID", _) => &mut self.uuid,
            ("LABEL", _) => &mut self.label,
            ("TYPE", _) => &mut self.fstype,
            ("DEVNAME", Form::Export) => &mut self.device,
            _ => return,
        };
        let value = decode_value(raw, form);
        *slot = if value.is_empty() { None } else { Some(value) };
    }

    /// The finished record, or `None` when it must be skipped.
    pub(super) fn finish(self) -> Option<DiskInfo> {
        if self.too_long {
            return None;
        }
        Some(DiskInfo {
            device: self.device?,
            uuid: self.uuid,
            label: self.label,
            fstype: self.fstype,
            devno: None,
            contents: Contents::Signature,
        })
    }
}

/// The parser proper; also returns how many lines or records were skipped.
pub(super) fn parse_blkid_counted(output: &str) -> (Vec<DiskInfo>, usize) {
    let mut disks = Vec::new();
    let mut skipped = 0usize;
    let mut open: Option<Record> = None;

    pub(super) fn close(rec: Option<Record>, disks: &mut Vec<DiskInfo>, skipped: &mut usize) {
        if let Some(rec) = rec {
            match rec.finish() {
                Some(d) => disks.push(d),
                None => *skipped += 1,
            }
        }
    }

    for line in output.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            close(open.take(), &mut disks, &mut skipped);
            continue;
        }
        if let Some((key, value)) = export_line(line) {
            let rec = open.get_or_insert_with(Record::default);
            // A second DEVNAME without a blank line in between starts the next device.
            if key == "DEVNAME" && rec.device.is_some() {
                close(open.take(), &mut disks, &mut skipped);
            }
            open.get_or_insert_with(Record::default)
                .set(key, value, Form::Export);
            continue;
        }
        match parse_plain_line(line) {
            Some(rec) => close(Some(rec), &mut disks, &mut skipped),
            None => skipped += 1,
        }
    }
    close(open.take(), &mut disks, &mut skipped);
    (disks, skipped)
}

/// `KEY=value` with a shell-variable-like key, as `-o export` prints.
pub(super) fn export_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let mut chars = key.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((key, value))
}

/// `/dev/sdb1: UUID="..." LABEL="..." TYPE="..."`; `None` if the line is not of that shape.
pub(super) fn parse_plain_line(line: &str) -> Option<Record> {
    let (device, mut rest) = line.split_once(": ")?;
    if device.is_empty() {
        return None;
    }
    let mut rec = Record {
        device: Some(device.to_string()),
        ..Record::default()
    };
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let end = closing_quote(after)?;
        rec.set(key, &after[..end], Form::Plain);
        rest = &after[end + 1..];
        // Pairs are separated by spaces; anything glued to the closing quote is not blkid.
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
    }
    if !rec.has_fields {
        return None;
    }
    Some(rec)
}

/// Byte index of the `"` that ends a plain-form value, skipping escaped characters.
pub(super) fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if !caret_backslash(b, i) => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// blkid writes the byte 0x9c (part of `Ü` and many other characters) as `M-^\` without
/// escaping that backslash, in both forms; it must not be taken as an escape, or `Ürlaub`
/// would lose its `r` and a label ending in `Ü` would swallow its closing quote.
pub(super) fn caret_backslash(b: &[u8], i: usize) -> bool {
    i >= 3 && &b[i - 3..i] == b"M-^"
}

/// Decodes one value: backslash escapes first (per form), then blkid's `M-` notation for
/// non-ASCII bytes, then bytes to UTF-8, lossily.
pub(super) fn decode_value(raw: &str, form: Form) -> String {
    let src = raw.as_bytes();
    let mut bytes = Vec::with_capacity(src.len());
    // Whether each byte was written as itself (and so may be part of `M-` notation) rather
    // than as a numeric escape.
    let mut literal = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c != b'\\' || caret_backslash(src, i) {
            bytes.push(c);
            literal.push(true);
            i += 1;
            continue;
        }
        if let Some(byte) = hex_escape(&src[i + 1..]) {
            bytes.push(byte);
            literal.push(false);
            i += 4;
            continue;
        }
        if let Some(byte) = octal_escape(&src[i + 1..]) {
            bytes.push(byte);
            literal.push(false);
            i += 4;
            continue;
        }
        match (form, src.get(i + 1)) {
            // Export form escapes any special character by putting a backslash before it.
            (Form::Export, Some(&next)) => {
                bytes.push(next);
                literal.push(true);
                i += 2;
            }
            // Default form escapes only `"` and `\`; any other backslash is itself.
            (Form::Plain, Some(&next)) if next == b'"' || next == b'\\' => {
                bytes.push(next);
                literal.push(true);
                i += 2;
            }
            _ => {
                bytes.push(b'\\');
                literal.push(true);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decode_meta(&bytes, &literal)).into_owned()
}

pub(super) fn hex_escape(s: &[u8]) -> Option<u8> {
    match s {
        [b'x', h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            let text = std::str::from_utf8(&s[1..3]).ok()?;
            u8::from_str_radix(text, 16).ok()
        }
        _ => None,
    }
}

pub(super) fn octal_escape(s: &[u8]) -> Option<u8> {
    match s {
        [a, b, c, ..] if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) => {
            let text = std::str::from_utf8(&s[..3]).ok()?;
            // `\400` and above are not a byte; leave such text alone.
            u8::from_str_radix(text, 8).ok()
        }
        _ => None,
    }
}

/// Replaces runs of `M-x` / `M-^x` (blkid's `cat -v` style notation for bytes >= 0x80) by
/// the bytes they stand for, but only as far as those bytes form valid UTF-8: a label that
/// really contains text like `TEAM-A` stays as it is.
pub(super) fn decode_meta(bytes: &[u8], literal: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let mut run = Vec::new();
        let mut ends = Vec::new();
        let mut j = i;
        while let Some((byte, next)) = meta_at(bytes, literal, j) {
            run.push(byte);
            ends.push(next);
            j = next;
        }
        let valid = match std::str::from_utf8(&run) {
            Ok(_) => run.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            out.extend_from_slice(&run[..valid]);
            i = ends[valid - 1];
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte written as `M-...` at `j`, and where the notation ends.
pub(super) fn meta_at(bytes: &[u8], literal: &[bool], j: usize) -> Option<(u8, usize)> {
    let lit = |k: usize| literal.get(k).copied().unwrap_or(false);
    if bytes.get(j) != Some(&b'M') || bytes.get(j + 1) != Some(&b'-') || !lit(j) || !lit(j + 1) {
        return None;
    }
    let c = *bytes.get(j + 2)?;
    if !lit(j + 2) {
        return None;
    }
    if c == b'^' && lit(j + 3) {
        match bytes.get(j + 3) {
            Some(&b'?') => return Some((0xff, j + 4)),
            Some(&d) if (0x40..=0x5f).contains(&d) => return Some(((d ^ 0x40) | 0x80, j + 4)),
            _ => {}
        }
    }
    if (0x20..=0x7e).contains(&c) {
        return Some((c | 0x80, j + 3));
    }
    None
}
