//! What several unit tests need: the root check of `#[ignore = "needs root"]` tests and a
//! file owned by someone else (which only root can make).

use std::path::{Path, PathBuf};

/// Fail at once, saying why, when a root-only test runs without root (it is run with
/// `--include-ignored`, never skipped silently).
pub fn needs_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root ({why}): run as root, or without --include-ignored"
    );
}

/// The uid of nobody on this machine: a stranger's files.
pub const STRANGER: u32 = 4_000_000_001;

/// `dir/name` holding `bytes`, mode 0600, owned by [`STRANGER`].
pub fn file_of_a_stranger(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    needs_root("chown to another uid");
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&path, Some(STRANGER), None).unwrap();
    path
}
