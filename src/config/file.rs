//! The YAML file and the flags, laid over each other: the file is read into the same
//! struct the flags are (`DaemonArgs`, parsed strictly: an unknown key is an error naming
//! it), and every flag given replaces its key.

use super::*;
use crate::flags::CommandLine;

impl CommandLine {
    /// The argv: a string is split into words as a shell would (quotes keep a path with
    /// spaces one word), never run by one.
    pub(super) fn into_argv(self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self {
            CommandLine::One(s) => split_words(key, &s),
            CommandLine::Many(v) => Ok(v),
        }
    }
}

/// The config file at `path` (empty: nothing set).
pub(super) fn load_file(path: &Path) -> Result<DaemonArgs, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("config {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(DaemonArgs::default());
    }
    serde_yaml::from_str(&text).map_err(|e| err(format!("config {}: {e}", path.display())))
}

/// `flags` laid over `file`: every key the command line set replaces the file's (a list
/// too, as a whole); the rest is the file's. Both are the same struct, so this works on
/// their YAML form, key by key, and needs no list of keys.
pub(super) fn layered(file: DaemonArgs, flags: &DaemonArgs) -> Result<DaemonArgs, ConfigError> {
    let mut merged = serde_yaml::to_value(&file).map_err(|e| err(format!("config: {e}")))?;
    // Paths are text here, as in the file: a path flag that is not UTF-8 is refused.
    let top = serde_yaml::to_value(flags.clone().switches_to_keys())
        .map_err(|e| err(format!("a flag: {e} (paths must be UTF-8)")))?;
    over(&mut merged, top);
    let mut out: DaemonArgs =
        serde_yaml::from_value(merged).map_err(|e| err(format!("config: {e}")))?;
    // Flag-only settings do not travel through the file's form.
    out.log.level = flags.log.level.clone();
    Ok(out)
}

/// Lay `top` over `base`: mappings key by key, anything else replaced unless `top` is null.
fn over(base: &mut serde_yaml::Value, top: serde_yaml::Value) {
    use serde_yaml::Value;
    match (base, top) {
        (_, Value::Null) => {}
        (Value::Mapping(b), Value::Mapping(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => over(slot, v),
                    None => {
                        if !v.is_null() {
                            b.insert(k, v);
                        }
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
