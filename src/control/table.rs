//! Aligned text tables for human replies.
//!
//! Cells are sanitised: control characters (a label may hold a newline or an escape
//! sequence) are shown escaped, so a hostile label can neither break the reply framing nor
//! drive the user's terminal. Columns are aligned by the width a terminal gives each
//! character (`unicode-width`): a CJK character takes two columns, a combining accent none.

use unicode_width::UnicodeWidthStr;

/// Render a table with a header row; every row must have as many cells as the header.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| sanitize(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.width());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(c.width());
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(&mut header.iter().copied())];
    for r in &rows {
        out.push(line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// Show a value in a cell: `-` for nothing, control characters escaped.
pub fn sanitize(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A cell from an optional value.
pub fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// A cell from an optional percentage, written as `df` writes it (`42%`) so that the
/// listings read like the tools operators know.
pub fn percent(p: Option<u64>) -> String {
    p.map(|p| format!("{p}%")).unwrap_or_default()
}

/// A size in bytes for people, in binary units as `lsblk` and `df -h` show them: `512B`,
/// `4K`, `1.5G`, `3.6T` (one decimal below 10 units, none above).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "K", "M", "G", "T", "P", "E"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 || value.fract() < 0.05 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_lsblk_shows_them() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(512), "512B");
        assert_eq!(size(4096), "4K");
        assert_eq!(size(1536 * 1024 * 1024), "1.5G");
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(size(4_000_787_030_016), "3.6T");
        assert_eq!(size(u64::MAX), "16E");
    }

    #[test]
    fn aligns_and_escapes() {
        let t = render(
            &["A", "BB"],
            &[
                vec!["long value".into(), "x".into()],
                vec!["new\nline\u{1b}[31m".into(), String::new()],
            ],
        );
        // The escaped cell is 19 characters wide; two spaces separate the columns.
        assert_eq!(t[0], format!("A{}BB", " ".repeat(20)));
        assert_eq!(t[1], format!("long value{}x", " ".repeat(11)));
        assert_eq!(t[2], "new\\nline\\u{1b}[31m  -");
        assert!(t.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn wide_and_combining_characters_align_as_a_terminal_shows_them() {
        let t = render(
            &["LABEL", "DEVICE"],
            &[
                vec!["写真".into(), "/dev/sda".into()],
                vec!["cafe\u{301}".into(), "/dev/sdb".into()],
                vec!["plain".into(), "/dev/sdc".into()],
            ],
        );
        // Two CJK characters are four columns; "e" + a combining accent is one.
        assert_eq!(t[1], "写真   /dev/sda");
        assert_eq!(t[2], "cafe\u{301}   /dev/sdb");
        assert_eq!(t[3], "plain  /dev/sdc");
        // The second column starts at the same terminal column on every line.
        let at = |l: &str, word: &str| l[..l.find(word).unwrap()].width();
        let header_at = at(&t[0], "DEVICE");
        assert!(t[1..].iter().all(|l| at(l, "/dev") == header_at), "{t:?}");
    }
}
