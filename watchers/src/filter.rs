//! Include/exclude globs on device paths, shared by every watcher that lists block devices
//! so that `include = ["/dev/sd*"]` means the same thing to each of them.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Which device paths a watcher reports: compiled once, so a bad pattern is reported at
/// startup rather than on every scan.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl DeviceFilter {
    /// In the patterns `*` does not cross `/` (as in a shell): `/dev/*` means the nodes
    /// directly in `/dev`, `/dev/**` everything below it.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        Ok(DeviceFilter {
            include: compile_globs(include)?,
            exclude: compile_globs(exclude)?,
        })
    }

    /// Whether a device passes: an empty include list admits everything, and exclude wins
    /// over include.
    pub(crate) fn wanted(&self, device: &str) -> bool {
        if let Some(include) = &self.include {
            if !include.is_match(device) {
                return false;
            }
        }
        match &self.exclude {
            Some(exclude) => !exclude.is_match(device),
            None => true,
        }
    }
}

/// `None` for no patterns, so "no include list" is not confused with "an include list
/// nothing matches".
fn compile_globs(patterns: &[String]) -> Result<Option<GlobSet>, globset::Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(GlobBuilder::new(p).literal_separator(true).build()?);
    }
    set.build().map(Some)
}
