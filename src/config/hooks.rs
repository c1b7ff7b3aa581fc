//! Hooks as configured: events, match patterns, the user a command runs as, limits.

use super::*;
use crate::flags::CommandLine;
use crate::model::HealthState;

/// Default of `hooks_max_running`.
pub const DEFAULT_HOOKS_MAX_RUNNING: usize = 4;
/// The largest `hooks_max_running` accepted.
pub const MAX_HOOKS_RUNNING: usize = 256;
/// Default of a hook's `timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// A hook: a command run on some changes of the fleet picture, validated and compiled.
/// The runner is `crate::hooks`.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Its place in the `hooks` list (`hook[0]` in logs and `status`).
    pub index: usize,
    /// The kinds of change it runs on (no duplicates, in the order written).
    pub on: Vec<FleetEventKind>,
    /// `match`: UUID or label glob; for peer events only the default `*` matches.
    pub disk: Pattern,
    /// `host`: host-name glob.
    pub host: Pattern,
    /// `local`: only this machine's disks.
    pub local: bool,
    /// The argv run (never through a shell); `run[0]` is looked up in `PATH` when it
    /// has no `/`.
    pub run: Vec<String>,
    /// Killed with its process group after this long.
    pub timeout: Duration,
    /// `health`: only for disks whose SMART verdict is one of these (empty: any disk, with
    /// a reading or without).
    pub health: Vec<HealthState>,
    /// `allow_unsealed`: also run for events of peers heard unsealed (no keys, legacy Perl
    /// peers), whose every word anyone on the LAN could have written.
    pub allow_unsealed: bool,
    /// `user` (and `group`): whom the command runs as; `None`: the daemon's user.
    pub run_as: Option<RunAs>,
}

/// A hook's `user` and `group`, looked up when the config is read: the command runs with
/// this uid, gid and the user's supplementary groups, set before exec (as systemd's
/// `User=`), so a hook can be given less than the daemon's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name (for `USER`, `LOGNAME` and messages).
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// `group`'s gid, else the user's primary group.
    pub gid: u32,
    /// The user's supplementary groups from the group database, with `gid` first.
    pub groups: Vec<u32>,
    /// The user's home directory (for `HOME`).
    pub home: PathBuf,
}

impl RunAs {
    /// Look up `user` (a name or a numeric uid) and `group` for `hooks[i]`, whose keys
    /// `user_key` and `group_key` errors name.
    /// `None` when that is who the daemon runs as already (not root: it could not
    /// switch, nor set groups, and need not).
    fn lookup(
        user_key: &str,
        user: &str,
        group_key: &str,
        group: Option<&str>,
    ) -> Result<Option<RunAs>, ConfigError> {
        use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(user),
        };
        let u = match found {
            Ok(Some(u)) => u,
            Ok(None) => return Err(err(format!("{user_key}: no user {user:?} on this machine"))),
            Err(e) => return Err(err(format!("{user_key}: cannot look up {user:?}: {e}"))),
        };
        let gid = match group {
            None => u.gid,
            Some(g) => {
                let found = match g.parse::<u32>() {
                    Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                    Err(_) => Group::from_name(g),
                };
                match found {
                    Ok(Some(g)) => g.gid,
                    Ok(None) => {
                        return Err(err(format!("{group_key}: no group {g:?} on this machine")))
                    }
                    Err(e) => return Err(err(format!("{group_key}: cannot look up {g:?}: {e}"))),
                }
            }
        };
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            if u.uid == me && gid == nix::unistd::getegid() {
                return Ok(None);
            }
            return Err(err(format!(
                "{user_key}: running a hook as {:?} (or with another group) needs the daemon \
                 to run as root",
                u.name
            )));
        }
        let name = std::ffi::CString::new(u.name.clone())
            .map_err(|_| err(format!("{user_key}: the user's name holds a NUL byte")))?;
        let mut groups = vec![gid.as_raw()];
        match getgrouplist(&name, u.gid) {
            Ok(list) => groups.extend(
                list.into_iter()
                    .map(Gid::as_raw)
                    .filter(|g| *g != gid.as_raw()),
            ),
            Err(e) => {
                return Err(err(format!(
                    "{user_key}: cannot read the groups of {:?}: {e}",
                    u.name
                )))
            }
        }
        Ok(Some(RunAs {
            user: u.name,
            uid: u.uid.as_raw(),
            gid: gid.as_raw(),
            groups,
            home: u.dir,
        }))
    }
}

/// A glob of a hook (`match`, `host`) as written and compiled. `*` (the default) matches
/// everything, also what has no value to test (a disk without UUID or label, a peer).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    /// `None`: `*`.
    set: Option<globset::GlobSet>,
}

impl Pattern {
    fn compile(key: &str, text: Option<String>) -> Result<Pattern, ConfigError> {
        let text = text.unwrap_or_else(|| "*".to_string());
        let set = if text == "*" {
            None
        } else {
            Some(glob_set(key, std::slice::from_ref(&text))?)
        };
        Ok(Pattern { text, set })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it is `*`, matching everything.
    pub fn is_any(&self) -> bool {
        self.set.is_none()
    }

    /// Whether any of `values` matches (always, for `*`).
    pub fn matches_any<'a>(&self, values: impl IntoIterator<Item = Option<&'a str>>) -> bool {
        match &self.set {
            None => true,
            Some(set) => values.into_iter().flatten().any(|v| set.is_match(v)),
        }
    }
}

/// A hook as written: every value read on its own, so that an error names its key.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a hook: a map with `on` and `run` (and optionally `match`, `host`, `local`, `health`, `timeout`, `user`, `group`, `allow_unsealed`)"
)]
pub(super) struct FileHook {
    on: Option<serde_yaml::Value>,
    #[serde(rename = "match")]
    pattern: Option<serde_yaml::Value>,
    host: Option<serde_yaml::Value>,
    local: Option<serde_yaml::Value>,
    health: Option<serde_yaml::Value>,
    run: Option<serde_yaml::Value>,
    timeout: Option<serde_yaml::Value>,
    user: Option<serde_yaml::Value>,
    group: Option<serde_yaml::Value>,
    allow_unsealed: Option<serde_yaml::Value>,
}

/// One value of a hook, typed; a wrong type names `hooks[i].key`.
pub(super) fn hook_value<T: serde::de::DeserializeOwned>(
    key: &str,
    value: Option<serde_yaml::Value>,
) -> Result<Option<T>, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(v) => serde_yaml::from_value(v)
            .map(Some)
            .map_err(|e| err(format!("{key}: {e}"))),
    }
}

/// A glob of a hook: text, or a number as written (a label `2024` needs no quotes).
pub(super) fn hook_text(
    key: &str,
    value: Option<serde_yaml::Value>,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(serde_yaml::Value::Number(n)) => Ok(Some(n.to_string())),
        v => hook_value(key, v),
    }
}

/// A string or a list of strings, with a message naming the key and what was expected
/// (serde's own one, for an untagged enum, says neither).
pub(super) fn string_or_list(
    key: &str,
    value: Option<serde_yaml::Value>,
    expected: &str,
) -> Result<Option<CommandLine>, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(v) => serde_yaml::from_value(v).map(Some).map_err(|_| {
            err(format!(
                "{key}: expected {expected}, as text or a list of text"
            ))
        }),
    }
}

pub(super) fn hooks_settings(entries: Vec<serde_yaml::Value>) -> Result<Vec<Hook>, ConfigError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| hook_settings(i, v))
        .collect()
}

pub(super) fn hook_settings(index: usize, entry: serde_yaml::Value) -> Result<Hook, ConfigError> {
    let at = format!("hooks[{index}]");
    let f: FileHook = serde_yaml::from_value(entry).map_err(|e| err(format!("{at}: {e}")))?;

    let key = format!("{at}.on");
    let names: Vec<String> = match string_or_list(&key, f.on, "a list of event names")? {
        None => {
            return Err(err(format!(
                "{key}: required (a list of events: {})",
                event_names()
            )))
        }
        Some(CommandLine::One(name)) => vec![name],
        Some(CommandLine::Many(names)) => names,
    };
    if names.is_empty() {
        return Err(err(format!(
            "{key}: must list at least one event ({})",
            event_names()
        )));
    }
    let mut on = Vec::new();
    for name in &names {
        let kind = FleetEventKind::parse(name.trim())
            .ok_or_else(|| err(format!("{key}: unknown event {name:?} ({})", event_names())))?;
        if !on.contains(&kind) {
            on.push(kind);
        }
    }

    let key = format!("{at}.match");
    let disk = Pattern::compile(&key, hook_text(&key, f.pattern)?)?;
    let host_key = format!("{at}.host");
    let host = Pattern::compile(&host_key, hook_text(&host_key, f.host)?)?;
    let local_key = format!("{at}.local");
    let local = hook_value::<bool>(&local_key, f.local)?.unwrap_or(false);
    // A hook that can never run is a mistake worth stopping for: peer events carry no disk
    // (so no UUID or label to match) and are never about this machine.
    if on.iter().all(|k| k.is_peer()) {
        if !disk.is_any() {
            return Err(err(format!(
                "{key}: {:?} never matches: peer-live and peer-lost have no disk (use host, or add disk events)",
                disk.text()
            )));
        }
        if local {
            return Err(err(format!(
                "{local_key}: true never matches: peer-live and peer-lost are never about this machine"
            )));
        }
    }

    let key = format!("{at}.health");
    let health = match string_or_list(&key, f.health, "a list of health states")? {
        None => Vec::new(),
        Some(CommandLine::One(s)) => vec![s],
        Some(CommandLine::Many(v)) => v,
    }
    .iter()
    .map(|s| {
        let state = [
            HealthState::Ok,
            HealthState::Warning,
            HealthState::Failing,
            HealthState::Unknown,
        ]
        .into_iter()
        .find(|h| h.as_str() == s.trim());
        state.ok_or_else(|| {
            err(format!(
                "{key}: unknown health state {s:?} (ok, warning, failing, unknown)"
            ))
        })
    })
    .collect::<Result<Vec<_>, _>>()?;
    if !health.is_empty() && on.iter().all(|k| k.is_peer()) {
        return Err(err(format!(
            "{key}: never matches: peer-live and peer-lost have no disk"
        )));
    }

    let key = format!("{at}.run");
    let run = match string_or_list(&key, f.run, "an argv list, or a command line")? {
        None => {
            return Err(err(format!(
                "{key}: required (an argv list, or a command line split into words)"
            )))
        }
        Some(r) => r.into_argv(&key)?,
    };
    if run.first().is_none_or(|p| p.is_empty()) {
        return Err(err(format!("{key}: must name a program")));
    }
    if let Some(i) = run.iter().position(|w| w.contains('\0')) {
        return Err(err(format!("{key}: word {i} contains a NUL byte")));
    }

    let key = format!("{at}.timeout");
    if let Some(serde_yaml::Value::Number(n)) = &f.timeout {
        return Err(err(format!("{key}: {n} has no unit (write {n}s or {n}m)")));
    }
    let timeout = duration(&key, hook_value(&key, f.timeout)?, DEFAULT_HOOK_TIMEOUT)?;

    let unsealed_key = format!("{at}.allow_unsealed");
    let allow_unsealed = hook_value::<bool>(&unsealed_key, f.allow_unsealed)?.unwrap_or(false);
    let user_key = format!("{at}.user");
    let group_key = format!("{at}.group");
    let user = hook_text(&user_key, f.user)?;
    let group = hook_text(&group_key, f.group)?;
    let run_as = match (user, group) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(err(format!(
                "{group_key}: needs {user_key} (the user whose groups the command gets)"
            )))
        }
        (Some(u), g) => {
            RunAs::lookup(&user_key, u.trim(), &group_key, g.as_deref().map(str::trim))?
        }
    };

    Ok(Hook {
        index,
        on,
        disk,
        host,
        local,
        health,
        run,
        timeout,
        allow_unsealed,
        run_as,
    })
}

pub(super) fn event_names() -> String {
    FleetEventKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}
