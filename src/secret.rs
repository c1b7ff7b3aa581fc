//! Reading a secret file (a key, the HTTP token) so that the file checked is the file read.
//!
//! The file is opened first, without waiting (`O_NONBLOCK`: a FIFO put there must not hang
//! the start). Everything is then checked on the open file (`fstat`), so a path swapped
//! between a check and the read changes nothing: a regular file, owned by root or the
//! daemon's user (anyone else could rewrite it), no group or other permission bits, at most
//! [`MAX_SECRET_BYTES`]; and at most that much is read. A symbolic link is followed (a
//! mounted secret is usually one): what is checked is the file it leads to, the one read.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest secret file read: a key or a token is one short line.
pub const MAX_SECRET_BYTES: usize = 4096;

/// What is wrong with a secret file (the caller names the key and the path).
#[derive(Debug)]
pub enum Problem {
    /// It cannot be opened (missing, unreadable, ...).
    Open(io::Error),
    /// A directory, a device, a FIFO, ...
    NotAFile,
    /// Owned by someone who is neither root nor the daemon's user.
    Owner {
        /// The file's owner.
        uid: u32,
        /// The daemon's (effective) user.
        me: u32,
    },
    /// Group or others have some permission.
    Mode(u32),
    /// Larger than [`MAX_SECRET_BYTES`].
    TooLarge(u64),
    /// Reading it failed.
    Read(io::Error),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Open(e) | Problem::Read(e) => write!(f, "{e}"),
            Problem::NotAFile => f.write_str("not a regular file"),
            Problem::Owner { uid, me } => write!(
                f,
                "owned by uid {uid}, who could change it; it must belong to root or the \
                 daemon's user (uid {me}): chown it"
            ),
            Problem::Mode(mode) => write!(
                f,
                "mode {mode:o} lets others read or change it; chmod 600 it"
            ),
            Problem::TooLarge(len) => write!(
                f,
                "{len} bytes, more than {MAX_SECRET_BYTES}; it should hold one short line"
            ),
        }
    }
}

/// Check what `fstat` said of an open file: the rules of this module, as a function of
/// the file's type, owner, mode and size, and of who the daemon runs as.
pub fn check(is_file: bool, uid: u32, mode: u32, len: u64, me: u32) -> Result<(), Problem> {
    if !is_file {
        return Err(Problem::NotAFile);
    }
    if uid != 0 && uid != me {
        return Err(Problem::Owner { uid, me });
    }
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Problem::Mode(mode & 0o777));
    }
    if len > MAX_SECRET_BYTES as u64 {
        return Err(Problem::TooLarge(len));
    }
    Ok(())
}

/// Open `path`, check the open file, and read it (at most [`MAX_SECRET_BYTES`]).
pub fn read(path: &Path) -> Result<Vec<u8>, Problem> {
    use nix::libc;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Problem::Open)?;
    let meta = file.metadata().map_err(Problem::Read)?;
    let me = nix::unistd::geteuid().as_raw();
    check(meta.is_file(), meta.uid(), meta.mode(), meta.len(), me)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Problem::Read)?;
    // Grown since fstat: still refused.
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(Problem::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_rules_on_what_fstat_says() {
        let me = 1000;
        assert!(check(true, 0, 0o100600, 44, me).is_ok());
        assert!(check(true, me, 0o100400, 4096, me).is_ok());
        assert!(matches!(
            check(false, 0, 0o040700, 0, me),
            Err(Problem::NotAFile)
        ));
        let e = check(true, 1234, 0o100600, 44, me).unwrap_err();
        assert!(matches!(
            e,
            Problem::Owner {
                uid: 1234,
                me: 1000
            }
        ));
        assert!(e.to_string().contains("owned by uid 1234"), "{e}");
        assert!(e.to_string().contains("chown"), "{e}");
        for mode in [0o100640, 0o100604, 0o100620, 0o100602, 0o100660] {
            let e = check(true, 0, mode, 44, me).unwrap_err();
            assert!(
                matches!(e, Problem::Mode(m) if m == mode & 0o777),
                "{mode:o}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let e = check(true, 0, 0o100600, 4097, me).unwrap_err();
        assert!(matches!(e, Problem::TooLarge(4097)), "{e}");
    }

    #[test]
    fn fifos_directories_and_big_files_are_refused_and_links_checked_on_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, b"secret\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&good).unwrap(), b"secret\n");

        // A link is followed, and the file it leads to is what is checked.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert_eq!(read(&link).unwrap(), b"secret\n");
        let open = dir.path().join("open");
        std::fs::write(&open, b"secret\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let to_open = dir.path().join("to-open");
        std::os::unix::fs::symlink(&open, &to_open).unwrap();
        assert!(matches!(read(&to_open), Err(Problem::Mode(0o644))));

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&fifo), Err(Problem::NotAFile)), "a FIFO");
        assert!(matches!(read(dir.path()), Err(Problem::NotAFile)));

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_BYTES + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read(&big), Err(Problem::TooLarge(4097))));

        assert!(matches!(
            read(&dir.path().join("missing")),
            Err(Problem::Open(_))
        ));
    }

    /// A file of another owner (only root can make one; without root the rule is still
    /// covered by `the_rules_on_what_fstat_says`).
    #[test]
    #[ignore = "needs root"]
    fn a_file_someone_else_owns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = crate::test_support::file_of_a_stranger(dir.path(), "theirs", b"secret\n");
        let e = read(&theirs).unwrap_err();
        assert!(
            matches!(
                e,
                Problem::Owner {
                    uid: crate::test_support::STRANGER,
                    ..
                }
            ),
            "{e}"
        );
    }
}
