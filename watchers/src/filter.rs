//! Include/exclude globs on device paths, shared by every watcher that lists block devices
//! so that `include = ["/dev/sd*"]` means the same thing to each of them, and the one rule
//! by which every glob of diskd is compiled.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Compile a glob as every pattern of diskd is compiled (device paths, `mount.allow`,
/// hooks' `match`): `*` does not cross `/` (as in a shell): `/dev/*` means the nodes
/// directly in `/dev`, `/dev/**` everything below it.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// A pattern that does not compile, and the list it is in.
#[derive(Debug, thiserror::Error)]
#[error("{list}: {pattern:?}: {source}")]
pub struct BadPattern {
    /// `include` or `exclude`.
    pub list: &'static str,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    #[source]
    pub source: globset::Error,
}

/// Which device paths a watcher reports. Compiled once, by the daemon's configuration, so
/// a bad pattern is reported at startup (naming its key) and the watchers share the
/// compiled sets.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The patterns as written (two filters are equal when these are).
    patterns: (Vec<String>, Vec<String>),
}

impl PartialEq for DeviceFilter {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for DeviceFilter {}

impl DeviceFilter {
    /// Compile the lists: an empty include list admits everything.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, BadPattern> {
        Ok(DeviceFilter {
            include: compile_globs("include", include)?,
            exclude: compile_globs("exclude", exclude)?,
            patterns: (include.to_vec(), exclude.to_vec()),
        })
    }

    /// Whether a device passes: an empty include list admits everything, and exclude wins
    /// over include.
    pub fn wanted(&self, device: &str) -> bool {
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
fn compile_globs(list: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, BadPattern> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let bad = |p: &String, source| BadPattern {
        list,
        pattern: p.clone(),
        source,
    };
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(glob(p).map_err(|e| bad(p, e))?);
    }
    set.build()
        .map(Some)
        .map_err(|e| bad(&patterns.join(" "), e))
}
