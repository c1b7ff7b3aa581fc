//! Checks on identifiers that come from outside the process (the wire, the socket, blkid)
//! before they are used as a directory name or a key.

/// Whether `uuid` can safely name a directory under `mount.root`: letters, digits and
/// dashes only, so no UUID can contain `/` or be `..`.
pub fn valid_uuid(uuid: &str) -> bool {
    !uuid.is_empty()
        && uuid.len() <= super::limits::UUID
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && uuid.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// Whether `id` has the shape of a node id (32 hex digits).
pub fn valid_node_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// At most `max` bytes and no control characters (so it cannot break a table or a log line).
pub fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_that_could_leave_a_directory_are_refused() {
        assert!(valid_uuid("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"));
        assert!(valid_uuid("ABCD-1234"));
        for bad in ["", "..", "-", "a/b", "a b", "x;y", &"a".repeat(65)] {
            assert!(!valid_uuid(bad), "{bad:?}");
        }
    }
}
