//! Records the git commit the binary is built from, so `diskd --version` and `status`
//! can tell which code a machine of the fleet runs. Built outside a checkout (a source
//! tarball, a crate), or without git, the version is the crate's alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DISKD_GIT_COMMIT");
    // A packager may set it (a build from an exported tree).
    let commit = std::env::var("DISKD_GIT_COMMIT").ok().or_else(|| {
        let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
        // Rebuild when HEAD moves (a checkout, a commit). Uncommitted changes are not
        // tracked: that would rebuild the crate whenever the index changes.
        if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                    println!("cargo:rerun-if-changed={common}/{reference}");
                }
            }
        }
        Some(commit)
    });
    let version = env!("CARGO_PKG_VERSION");
    let long = match &commit {
        Some(c) => format!("{version} ({c})"),
        None => version.to_string(),
    };
    println!(
        "cargo:rustc-env=DISKD_COMMIT={}",
        commit.unwrap_or_default()
    );
    println!("cargo:rustc-env=DISKD_LONG_VERSION={long}");
}
