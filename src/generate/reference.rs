//! The configuration reference (docs/configuration.md), generated from the options' one
//! definition in `flags/options.rs`. Every key of the file is a field there, whose doc comment
//! names the key and its default as `[KEY; default: X]`: schemars reads them all (keys
//! with a flag or without one), and clap says which flags set each key (a switch such as
//! `--no-gossip` names its key as `[gossip.enabled: false]`). Tests only: the committed
//! table must be this one, and every default it states must be what the daemon does.

use std::collections::BTreeMap;
use std::io::Write;

use clap::CommandFactory;
use serde_json::Value;

use crate::config::Config;
use crate::flags::{Cli, DaemonArgs};

/// A key of the file, as its field's doc comment describes it.
struct Key {
    /// Its dotted path (`gossip.seeds`).
    path: String,
    /// The key the doc comment names (must be `path`).
    named: String,
    /// Its default, as written after `default:` (`none` when not written).
    default: String,
    /// What it does.
    text: String,
}

/// Every key of the file, in dotted order, from the schema of `DaemonArgs`.
fn file_keys() -> Vec<Key> {
    let schema = schemars::schema_for!(DaemonArgs);
    let root = schema.as_value();
    let mut out = Vec::new();
    walk(root, root, "", &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The leaves below `node`: a property whose schema has properties of its own is a section.
fn walk(root: &Value, node: &Value, prefix: &str, out: &mut Vec<Key>) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let path = format!("{prefix}{name}");
        let target = resolve(root, prop);
        if target.get("properties").is_some() {
            walk(root, target, &format!("{path}."), out);
            continue;
        }
        let doc = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (text, named, default) = split_help(doc);
        out.push(Key {
            path,
            named: named.unwrap_or_default(),
            default,
            text,
        });
    }
}

/// The schema a `$ref` points to (`#/$defs/NAME`), or `prop` itself.
fn resolve<'a>(root: &'a Value, prop: &'a Value) -> &'a Value {
    prop.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| root.get("$defs")?.get(name))
        .unwrap_or(prop)
}

/// The flags of `diskd daemon` and the global ones.
struct Flags {
    /// By the key each sets (`--no-gossip` sets `gossip.enabled`).
    by_key: BTreeMap<String, Vec<String>>,
    /// The flags that set no key, with their help.
    keyless: Vec<(String, String)>,
}

fn flags() -> Flags {
    let mut cmd = Cli::command();
    cmd.build();
    let daemon = cmd
        .find_subcommand("daemon")
        .expect("the daemon subcommand is defined in src/flags");
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keyless = Vec::new();
    let mut seen = Vec::new();
    for arg in cmd.get_arguments().chain(daemon.get_arguments()) {
        let Some(long) = arg.get_long() else { continue };
        // The global flags come again with the subcommand; --config names the file itself.
        if matches!(long, "help" | "version" | "daemon" | "config") || seen.contains(&long) {
            continue;
        }
        seen.push(long);
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let flag = match arg.get_value_names().and_then(|v| v.first()) {
            Some(v) if arg.get_action().takes_values() => format!("`--{long} {v}`"),
            _ => format!("`--{long}`"),
        };
        match split_help(&help) {
            (_, Some(key), _) => by_key.entry(key).or_default().push(flag),
            (text, None, _) => keyless.push((flag, text)),
        }
    }
    Flags { by_key, keyless }
}

/// A doc comment's description, key and default: `Text [key; default: X].` gives
/// (`Text`, `key`, `X`); `[key: false]` (a switch) gives the key with the switch's opposite
/// as the default; `[key]`: the default is `none`; no bracket: no key.
fn split_help(help: &str) -> (String, Option<String>, String) {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(open) = help.rfind(" [") else {
        return (help.trim_end_matches('.').into(), None, "-".into());
    };
    let text = help[..open].trim_end_matches('.').to_string();
    let inner = help[open + 2..].trim_end_matches('.').trim_end_matches(']');
    let (key, default) = match inner.split_once("; default: ") {
        Some((k, d)) => (k, d.to_string()),
        None => match inner.split_once(": ") {
            Some((k, "false")) => (k, "true".to_string()),
            Some((k, "true")) => (k, "false".to_string()),
            Some((k, v)) => (k, v.to_string()),
            None => (inner, "none".to_string()),
        },
    };
    (text, Some(key.to_string()), default)
}

/// The reference: one row per key of the file, then one per flag that sets no key.
pub fn config_reference() -> String {
    let Flags { by_key, keyless } = flags();
    let mut out =
        String::from("| key | flag | default | what it does |\n| --- | --- | --- | --- |\n");
    let cell = |s: &str| s.replace('|', "\\|");
    for k in file_keys() {
        let flags = by_key
            .get(&k.path)
            .map(|f| f.join(", "))
            .unwrap_or_else(|| "(file only)".into());
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.path,
            cell(&flags),
            cell(&k.default),
            cell(&k.text)
        ));
    }
    for (flag, text) in keyless {
        out.push_str(&format!("| - | {} | - | {} |\n", cell(&flag), cell(&text)));
    }
    out
}

/// The reference in docs/configuration.md is what the options say. `DISKD_BLESS=1` writes
/// it (after an option changed) instead of failing.
#[test]
fn the_configuration_reference_is_generated_from_the_options() {
    const BEGIN: &str =
        "<!-- BEGIN generated by `diskd` from src/flags/options.rs: do not edit -->\n";
    const END: &str = "<!-- END generated -->\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (head, rest) = doc
        .split_once(BEGIN)
        .expect("docs/configuration.md lost its BEGIN marker");
    let (committed, tail) = rest
        .split_once(END)
        .expect("docs/configuration.md lost its END marker");
    let generated = config_reference();
    if committed != generated {
        if std::env::var_os("DISKD_BLESS").is_some() {
            std::fs::write(path, format!("{head}{BEGIN}{generated}{END}{tail}")).unwrap();
        } else {
            panic!(
                "docs/configuration.md differs from the options; run \
                 `DISKD_BLESS=1 cargo test --lib generate` and commit it"
            );
        }
    }
    for row in [
        "| `multicast.group` | `--group ADDR` | 230.1.2.3 |",
        "| `gossip.seeds` | `--seed HOST[:PORT]` | none |",
        "| `peers.max_records` | (file only) | 1048576 |",
        "| `watchers.smart.timeout` | (file only) | 30s |",
        "| `multicast.enabled` | `--no-multicast` | true |",
        "| `socket` | `--socket PATH` | ~/.diskd-socket |",
        "| - | `--log-level LEVEL` | - |",
    ] {
        assert!(generated.contains(row), "{row:?} missing from\n{generated}");
    }
}

/// Every key's doc comment names that key, and every flag's key is a key of the file: a
/// field moved or renamed without its doc comment would document another key.
#[test]
fn every_key_is_documented_under_its_own_name() {
    let keys = file_keys();
    assert!(keys.len() > 40, "only {} keys", keys.len());
    for k in &keys {
        assert_eq!(
            k.named, k.path,
            "the doc comment of `{}` names another key",
            k.path
        );
        assert!(!k.text.is_empty(), "`{}` has no description", k.path);
    }
    let by_key = flags().by_key;
    for (key, flags) in by_key {
        assert!(
            keys.iter().any(|k| k.path == key),
            "{flags:?} set `{key}`, which the file does not have"
        );
    }
}

/// Keys whose default is a description, not a value the file could state (or stating it
/// does more than the default does).
const DESCRIBED_DEFAULTS: &[&str] = &[
    "control.admin_group",    // only root and the daemon's user
    "gossip.enabled",         // true, when keys are configured (without, stating it is an error)
    "gossip.advertise",       // the address of multicast.interface, or the route to a seed
    "gossip.listen",          // all addresses
    "gossip.seeds",           // none
    "hooks",                  // none
    "http.listen",            // off
    "http.token_file",        // none
    "mount.allow",            // none
    "multicast.interface",    // the system's choice
    "multicast.peer_expiry",  // 3 x announce interval
    "node_name",              // the hostname
    "security.key_files",     // none
    "socket_group",           // none
    "store",                  // $XDG_DATA_HOME/diskd
    "watchers.disks.exclude", // none
    "watchers.disks.include", // all
    "watchers.smart.enabled", // on when smartctl is found
];

/// `doc` with `path` (dotted) set to `value`.
fn set(doc: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    if !doc.is_mapping() {
        *doc = serde_yaml::Value::Mapping(Default::default());
    }
    let map = doc.as_mapping_mut().expect("made a mapping above");
    match rest {
        None => {
            map.insert(head.into(), value);
        }
        Some(rest) => {
            let slot = map.entry(head.into()).or_insert(serde_yaml::Value::Null);
            set(slot, rest, value);
        }
    }
}

/// A value of the same kind as `v` that is not `v`: a number plus one, a duration plus a
/// second, a switch turned over; `None` for other strings.
fn another(v: &serde_yaml::Value) -> Option<serde_yaml::Value> {
    use serde_yaml::Value;
    match v {
        Value::Bool(b) => Some(Value::Bool(!b)),
        Value::Number(n) => n.as_u64().map(|n| Value::from(n + 1)),
        Value::String(s) => humantime::parse_duration(s).ok().map(|d| {
            let d = d + std::time::Duration::from_secs(1);
            Value::String(humantime::format_duration(d).to_string())
        }),
        _ => None,
    }
}

/// A file that states a key's documented default loads to the same configuration as a
/// file without it, and (for a number, a duration or a switch) a file stating another
/// value loads to another one: the defaults the reference (and `--help`) state are the
/// ones the daemon applies, although the code that applies them is in `config`. Every
/// file turns the SMART watcher on, so that its settings are in the configuration even
/// where smartctl is not installed.
#[test]
fn the_documented_defaults_are_the_defaults() {
    let mut base = serde_yaml::Value::Null;
    set(&mut base, "watchers.smart.enabled", true.into());
    let load = |doc: &serde_yaml::Value| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(serde_yaml::to_string(doc).unwrap().as_bytes())
            .unwrap();
        Config::load(Some(f.path()), None, &DaemonArgs::default()).map(|c| format!("{c:?}"))
    };
    let defaults = load(&base).unwrap();
    let keys = file_keys();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for k in &keys {
        if DESCRIBED_DEFAULTS.contains(&k.path.as_str()) {
            continue;
        }
        checked += 1;
        // The default as the file would write it: a number or a switch as YAML reads a
        // scalar, anything else a string.
        let value = match serde_yaml::from_str::<serde_yaml::Value>(&k.default) {
            Ok(v @ (serde_yaml::Value::Bool(_) | serde_yaml::Value::Number(_))) => v,
            _ => serde_yaml::Value::String(k.default.clone()),
        };
        let mut stated = base.clone();
        set(&mut stated, &k.path, value.clone());
        match load(&stated) {
            Ok(c) if c == defaults => {}
            Ok(c) => wrong.push(format!(
                "`{}: {}` is not what the daemon does without it:\n{c}\n{defaults}",
                k.path, k.default
            )),
            Err(e) => wrong.push(format!("`{}: {}` does not load: {e}", k.path, k.default)),
        }
        if let Some(other) = another(&value) {
            let mut changed = base.clone();
            set(&mut changed, &k.path, other.clone());
            match load(&changed) {
                Ok(c) if c != defaults => {}
                Ok(_) => wrong.push(format!(
                    "`{}: {other:?}` loads to the defaults: the key does not reach the \
                     configuration, so its default is not checked",
                    k.path
                )),
                Err(e) => wrong.push(format!("`{}: {other:?}` does not load: {e}", k.path)),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for d in DESCRIBED_DEFAULTS {
        assert!(keys.iter().any(|k| k.path == *d), "no key `{d}`");
    }
    assert_eq!(checked + DESCRIBED_DEFAULTS.len(), keys.len());
}

/// The keys config/diskd.yaml writes, set or commented out (`# key: value`), as dotted
/// paths: a key's depth is its indentation, a comment's counted from its `#`.
fn example_keys(text: &str) -> Vec<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let lead = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        let (indent, rest) = match rest.strip_prefix('#') {
            Some(c) => {
                let inner = c.trim_start();
                (lead + (c.len() - inner.len()).saturating_sub(1), inner)
            }
            None => (lead, rest),
        };
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        let is_key = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && (value.is_empty() || value.starts_with(' '));
        if !is_key {
            continue;
        }
        stack.retain(|(i, _)| *i < indent);
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        out.push(path);
        stack.push((indent, key.to_string()));
    }
    out
}

/// config/diskd.yaml, the example every package installs, shows every key (set to its
/// default, or commented out with an example): a key added to the structs but not there
/// fails here.
#[test]
fn the_example_config_shows_every_key() {
    let text = include_str!("../../config/diskd.yaml");
    let shown = example_keys(text);
    let missing: Vec<String> = file_keys()
        .into_iter()
        .map(|k| k.path)
        .filter(|p| !shown.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "config/diskd.yaml does not show {missing:?}"
    );
}
