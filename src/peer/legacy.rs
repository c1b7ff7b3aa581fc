//! The Perl diskd's wire format, for mixed fleets (`multicast.legacy`).
//!
//! A legacy datagram is the ASCII prefix `diskd:` and a YAML document (YAML::XS `Dump`, so it
//! starts with `---`) holding a list of `[uuid, label, device]` triples, `~` for a missing
//! uuid or label. The Perl daemon reads at most 1500 bytes, keys peers by IPv4 address and
//! replaces that address's whole list on every datagram. These datagrams cannot be
//! authenticated: they are listed, never trusted with a remote action.

use serde::Deserialize;

use crate::model::DiskRecord;
use crate::protocol::frame::double_quoted;

/// The Perl prefix.
pub const PREFIX: &[u8] = b"diskd:";
/// The Perl daemon reads at most this much of a datagram.
pub const MAX_LEGACY: usize = 1500;
/// Most triples accepted from one legacy datagram (1500 bytes cannot hold more anyway).
const MAX_TRIPLES: usize = 256;

/// Why a legacy datagram was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// Longer than a Perl daemon would ever send or read.
    #[error("legacy datagram longer than {MAX_LEGACY} bytes")]
    Oversized,
    /// Not YAML, not a list of triples, or a field out of bounds.
    #[error("malformed legacy datagram: {0}")]
    Malformed(String),
}

/// Encode our inventory the way the Perl diskd does; the disks that do not fit in
/// `MAX_LEGACY` bytes are left out, and their number is returned with the datagram.
/// Only what blkid found goes out: the Perl diskd knew no blank disks, and they would take
/// the room of filesystems in the one datagram it reads.
pub fn encode(disks: &[DiskRecord]) -> (Vec<u8>, usize) {
    let disks: Vec<&DiskRecord> = disks
        .iter()
        .filter(|d| d.uuid.is_some() || d.label.is_some() || d.fstype.is_some())
        .collect();
    let mut out = Vec::with_capacity(MAX_LEGACY);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(b"---");
    if disks.is_empty() {
        out.extend_from_slice(b" []\n");
        return (out, 0);
    }
    out.push(b'\n');
    let mut left_out = 0;
    for d in disks {
        let entry = format!(
            "- - {}\n  - {}\n  - {}\n",
            scalar(d.uuid.as_deref()),
            scalar(d.label.as_deref()),
            scalar(Some(&d.device))
        );
        if out.len() + entry.len() > MAX_LEGACY {
            left_out += 1;
            continue;
        }
        out.extend_from_slice(entry.as_bytes());
    }
    if out.ends_with(b"---\n") {
        // Nothing fitted: still a valid (empty) list.
        out.truncate(out.len() - 1);
        out.extend_from_slice(b" []\n");
    }
    (out, left_out)
}

/// A YAML scalar as YAML::XS would accept it back as the same string: plain when that is
/// unambiguous, double-quoted with escapes otherwise; `~` for none.
fn scalar(v: Option<&str>) -> String {
    let Some(s) = v else {
        return "~".into();
    };
    let first_ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/');
    let plain = first_ok
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./+@,".contains(&b))
        && !looks_typed(s);
    if plain {
        return s.to_string();
    }
    double_quoted(s, |q, c| {
        if c.is_control() {
            q.push_str(&format!("\\x{:02x}", c as u32 & 0xff));
        } else {
            q.push(c);
        }
    })
}

/// Plain scalars a YAML 1.1 parser would turn into something other than a string.
fn looks_typed(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
    ) || s.parse::<f64>().is_ok()
        || s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b == b'-' || b == b':' || b == b'.')
        || s.starts_with("0x")
        || s.starts_with("0o")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Field {
    Text(String),
    Number(serde_yaml::Number),
    Bool(bool),
    Null,
}

impl Field {
    fn into_string(self) -> Option<String> {
        match self {
            Field::Text(s) => Some(s),
            Field::Number(n) => Some(n.to_string()),
            Field::Bool(b) => Some(b.to_string()),
            Field::Null => None,
        }
    }
}

/// Decode a legacy datagram (prefix included) into disks.
pub fn decode(bytes: &[u8]) -> Result<Vec<DiskRecord>, LegacyError> {
    if bytes.len() > MAX_LEGACY {
        return Err(LegacyError::Oversized);
    }
    let body = bytes
        .strip_prefix(PREFIX)
        .ok_or_else(|| LegacyError::Malformed("no diskd: prefix".into()))?;
    let text = std::str::from_utf8(body).map_err(|_| LegacyError::Malformed("not UTF-8".into()))?;
    // Anchors and aliases have no business in a list of triples; refusing them up front
    // rules out alias bombs whatever the parser's own limits. (YAML::XS quotes a label that
    // starts with & or *, so real labels never look like one.)
    if has_anchor_or_alias(text) {
        return Err(LegacyError::Malformed(
            "anchors and aliases are not accepted".into(),
        ));
    }
    let doc: Option<Vec<Vec<Field>>> =
        serde_yaml::from_str(text).map_err(|e| LegacyError::Malformed(e.to_string()))?;
    let doc = doc.unwrap_or_default();
    if doc.len() > MAX_TRIPLES {
        return Err(LegacyError::Malformed("too many entries".into()));
    }
    let mut disks = Vec::with_capacity(doc.len());
    for entry in doc {
        if entry.len() != 3 {
            return Err(LegacyError::Malformed(format!(
                "an entry of {} fields, not 3",
                entry.len()
            )));
        }
        let mut it = entry.into_iter().map(Field::into_string);
        let (uuid, label, device) = (
            it.next().flatten(),
            it.next().flatten(),
            it.next().flatten(),
        );
        let Some(device) = device else {
            return Err(LegacyError::Malformed("an entry without a device".into()));
        };
        let disk = DiskRecord {
            uuid,
            label,
            device,
            fstype: None,
            // The Perl diskd knows no hardware, and never says a device is empty.
            hardware: Default::default(),
            mountpoints: Vec::new(),
            probe: Default::default(),
            health: None,
            fs: None,
        };
        if !super::wire::valid_disk(&disk) {
            return Err(LegacyError::Malformed("a field out of bounds".into()));
        }
        disks.push(disk);
    }
    Ok(disks)
}

/// Whether the YAML text uses an anchor (`&x`) or alias (`*x`) outside quoted scalars.
fn has_anchor_or_alias(text: &str) -> bool {
    let mut in_double = false;
    let mut in_single = false;
    let mut prev = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_double => {
                chars.next();
            }
            '"' if !in_single => in_double = !in_double,
            '\'' if !in_double => in_single = !in_single,
            '&' | '*'
                if !in_double
                    && !in_single
                    && matches!(prev, ' ' | '-' | '[' | ',' | ':' | '\n') =>
            {
                return true;
            }
            '\n' => {
                in_single = false;
            }
            _ => {}
        }
        prev = c;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(uuid: Option<&str>, label: Option<&str>, dev: &str) -> DiskRecord {
        DiskRecord {
            probe: Default::default(),
            uuid: uuid.map(Into::into),
            label: label.map(Into::into),
            device: dev.into(),
            fstype: None,
            mountpoints: vec![],
            hardware: Default::default(),
            health: None,
            fs: None,
        }
    }

    #[test]
    fn the_perl_example_decodes() {
        let got = decode(
            b"diskd:---\n- - 6fe176fb-83a0-4e4a-af6a-f578ca7a1f65\n  - backup\n  - /dev/sdb1\n- - ~\n  - ~\n  - /dev/sdc1\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                d(
                    Some("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
                    Some("backup"),
                    "/dev/sdb1"
                ),
                d(None, None, "/dev/sdc1")
            ]
        );
        assert_eq!(decode(b"diskd:--- []\n").unwrap(), vec![]);
        assert_eq!(decode(b"diskd:---\n").unwrap(), vec![]);
    }

    #[test]
    fn our_datagrams_round_trip_with_hostile_labels() {
        let disks = vec![
            d(
                Some("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
                Some("backup"),
                "/dev/sdb1",
            ),
            d(None, Some("my photos: 2024 # best"), "/dev/sdc1"),
            d(Some("ABCD-1234"), None, "/dev/sdd1"),
            d(Some("1234"), Some("yes"), "/dev/sde1"),
            d(
                Some("x"),
                Some("quote \" back\\slash\nnewline *star &amp 'single'"),
                "/dev/sdf1",
            ),
            d(
                Some("y"),
                Some("Fotos 2024 — Ürlaub"),
                "/dev/disk/by-id/ata-X_Y-part1",
            ),
            d(Some("z"), Some("- dash"), "/dev/sdg1"),
        ];
        let (bytes, left) = encode(&disks);
        assert_eq!(left, 0);
        assert!(bytes.starts_with(b"diskd:---\n- - 6fe176fb"));
        assert_eq!(decode(&bytes).unwrap(), disks);
        // A blank disk (no UUID, label or filesystem) is not for a Perl peer.
        let mut with_blank = disks.clone();
        with_blank.insert(1, d(None, None, "/dev/sdz"));
        assert_eq!(encode(&with_blank).0, bytes);
    }

    #[test]
    fn what_does_not_fit_is_left_out_and_counted() {
        let disks: Vec<_> = (0..100)
            .map(|i| {
                d(
                    Some(&format!("{i:08}-83a0-4e4a-af6a-f578ca7a1f65")),
                    Some("label"),
                    "/dev/sdx1",
                )
            })
            .collect();
        let (bytes, left) = encode(&disks);
        assert!(bytes.len() <= MAX_LEGACY);
        assert!(left > 0);
        assert_eq!(decode(&bytes).unwrap().len() + left, 100);
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let laughs = b"diskd:---\na: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n";
        assert!(decode(laughs).is_err());
        let deep = format!("diskd:---\n{}{}", "[".repeat(700), "]".repeat(700));
        assert!(decode(deep.as_bytes()).is_err());
        assert!(decode(b"diskd:\xff\xfe").is_err());
        assert!(decode(b"diskd:---\n- - a\n  - b\n").is_err(), "two fields");
        assert!(
            decode(b"diskd:---\n- - a\n  - b\n  - ~\n").is_err(),
            "no device"
        );
        assert!(decode(b"diskd:--- {a: 1}\n").is_err());
        assert_eq!(decode(&[b'x'; 1501]), Err(LegacyError::Oversized));
        let long = format!("diskd:---\n- - u\n  - {}\n  - /dev/x\n", "l".repeat(300));
        assert!(decode(long.as_bytes()).is_err());
    }
}
