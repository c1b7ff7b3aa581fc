//! A fake sysfs in a temporary directory for tests, built like the real one: real
//! directories under `devices/`, relative symlinks in `class/block/` and for `device`.
//!
//! Shared by the unit tests of [`crate::hardware`] and the SMART watcher's integration
//! tests (`tests/smart.rs`, which includes this file by its path).

use std::path::Path;

/// The tree; removed when dropped.
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    /// An empty tree: only `class/block`.
    pub fn new() -> FakeSysfs {
        let sys = FakeSysfs {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(sys.root().join("class/block")).unwrap();
        sys
    }

    /// Where it is: what the watchers take for `/sys`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `rel` (below the root), creating its directories.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A relative symlink at `rel` to `target` (both below the root).
    pub fn link(&self, rel: &str, target: &str) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let depth = Path::new(rel).components().count() - 1;
        let up = "../".repeat(depth);
        std::os::unix::fs::symlink(format!("{up}{target}"), path).unwrap();
    }

    /// A block device directory `devpath` (below the root) named `class/block/NAME`,
    /// with its `size` in sectors and `dev`.
    pub fn block(&self, devpath: &str, size: u64, dev: &str) {
        let name = devpath.rsplit('/').next().unwrap();
        self.file(&format!("{devpath}/size"), format!("{size}\n"));
        self.file(&format!("{devpath}/dev"), format!("{dev}\n"));
        self.link(&format!("class/block/{name}"), devpath);
    }
}
