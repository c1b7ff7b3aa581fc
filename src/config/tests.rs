use super::*;
use std::io::Write;

/// The options of `diskd daemon ARGV`.
fn flags(argv: &[&str]) -> DaemonArgs {
    DaemonArgs::parse_from(argv).unwrap()
}

fn load_yaml(yaml: &str, args: &DaemonArgs) -> Result<Config, ConfigError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(yaml.as_bytes()).unwrap();
    Config::load(Some(f.path()), None, args)
}

/// The error loading `yaml` with `args` gives: one line.
fn load_error(yaml: &str, args: &DaemonArgs) -> String {
    let e = load_yaml(yaml, args).unwrap_err().to_string();
    assert!(!e.contains('\n'), "multi-line error: {e:?}");
    e
}

#[test]
fn defaults_match_the_interface() {
    let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
    assert_eq!(c.multicast.group.to_string(), "230.1.2.3");
    assert_eq!(c.multicast.port, 32003);
    assert_eq!(c.multicast.ttl, 1);
    assert_eq!(c.multicast.announce_interval, Duration::from_secs(60));
    assert_eq!(c.multicast.peer_expiry, Duration::from_secs(180));
    assert_eq!(c.watchers.disks.command, vec!["blkid"]);
    assert_eq!(c.watchers.disks.schedule.timeout, Duration::from_secs(15));
    assert_eq!(c.watchers.mounts_interval, Duration::from_secs(10));
    assert_eq!(c.ping_min_interval, Duration::from_secs(5));
    assert!(c.socket.ends_with(".diskd-socket"));
    assert_eq!(c.mount.root, PathBuf::from("/srv/diskd"));
    assert!(!c.mount.enabled);
}

#[test]
fn flags_win_over_the_file() {
    let args = flags(&["--port", "4000"]);
    let c = load_yaml(
        "multicast:\n  port: 5000\n  group: ff05::d15c\nwatchers:\n  disks:\n    command: [/bin/echo, hi]\n",
        &args,
    )
    .unwrap();
    assert_eq!(c.multicast.port, 4000);
    assert_eq!(c.multicast.group.to_string(), "ff05::d15c");
    assert_eq!(c.watchers.disks.command, vec!["/bin/echo", "hi"]);
}

#[test]
fn commands_split_as_a_shell_would_so_paths_may_hold_spaces() {
    let c = load_yaml(
        "watchers:\n  disks:\n    command: \"'/opt/my tools/blkid' -c /dev/null\"\nmount:\n  attach_command: \"sshfs -o 'IdentityFile=/root/my key' {addr}:{path} {target}\"\n",
        &DaemonArgs::default(),
    )
    .unwrap();
    assert_eq!(
        c.watchers.disks.command,
        vec!["/opt/my tools/blkid", "-c", "/dev/null"]
    );
    assert_eq!(
        c.mount.attach_command,
        "sshfs -o 'IdentityFile=/root/my key' {addr}:{path} {target}"
    );
    let e = load_yaml(
        "mount:\n  attach_command: \"sshfs '{addr}\"\n",
        &DaemonArgs::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("mount.attach_command"), "{e}");
}

#[test]
fn a_command_string_means_the_same_words_as_on_the_socket() {
    // One dialect: a quoted string means the same word in YAML as on a socket line.
    let quoted = r#""a\nb" 'c d' "\$HOME""#;
    let yaml = |line: &str| {
        format!(
            "watchers:\n  disks:\n    command: '{}'\n",
            line.replace('\'', "''")
        )
    };
    let c = load_yaml(&yaml(&format!("blkid {quoted}")), &DaemonArgs::default()).unwrap();
    let mut socket = vec!["blkid".to_string()];
    socket.extend(crate::protocol::frame::tokenize(quoted).unwrap());
    assert_eq!(c.watchers.disks.command, socket);
    assert_eq!(socket, vec!["blkid", "a\nb", "c d", "$HOME"]);
    // With a shell's leniency: configs written for a shell's rules still load.
    let c = load_yaml(
        &yaml(r#"/opt/my\ tools/blkid "s/\./,/""#),
        &DaemonArgs::default(),
    )
    .unwrap();
    assert_eq!(
        c.watchers.disks.command,
        vec!["/opt/my tools/blkid", r"s/\./,/"]
    );
}

#[test]
fn mount_allow_globs_follow_the_device_glob_rules() {
    let args = flags(&["--mount-allow", "backup*"]);
    let c = Config::load(None, None, &args).unwrap();
    assert!(c.mount.allow_set.is_match("backup-2024"));
    // `*` stops at `/`, as in watchers.disks.include.
    assert!(!c.mount.allow_set.is_match("backup/../etc"));
    let bad = flags(&["--mount-allow", "["]);
    let e = Config::load(None, None, &bad).unwrap_err();
    assert!(e.to_string().contains("mount.allow"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let d = DaemonArgs::default();
    let cases = [
        ("multicast:\n  grop: 1\n", "grop"),
        ("multicast:\n  group: 10.0.0.1\n", "multicast.group"),
        ("multicast:\n  ttl: 256\n", "multicast.ttl"),
        (
            "multicast:\n  max_datagram: 100\n",
            "multicast.max_datagram",
        ),
        (
            "multicast:\n  announce_interval: soon\n",
            "multicast.announce_interval",
        ),
        (
            "watchers:\n  disks:\n    timeout: 0s\n",
            "watchers.disks.timeout",
        ),
        (
            "watchers:\n  disks:\n    include: ['[']\n",
            "watchers.disks.include",
        ),
        ("node_name: 'a b'\n", "node_name"),
        ("mount:\n  root: relative\n", "mount.root"),
        ("- just\n- a list\n", "config"),
    ];
    for (yaml, key) in cases {
        let e = load_yaml(yaml, &d).unwrap_err().to_string();
        assert!(
            e.contains(key),
            "{yaml:?} gave {e:?}, expected it to name {key}"
        );
        assert!(
            !e.contains('\n') || key == "config",
            "multi-line error: {e:?}"
        );
    }
}

#[test]
fn gossip_needs_keys_and_parses_seeds() {
    let key = tempfile::NamedTempFile::new().unwrap();
    let key_path = key.path().to_string_lossy().into_owned();
    let keyed_with = |seeds: Vec<&str>, more: &[&str]| {
        let mut argv = vec!["--key-file", key_path.as_str()];
        for s in seeds {
            argv.extend(["--seed", s]);
        }
        argv.extend(more);
        flags(&argv)
    };
    let keyed = |seeds: Vec<&str>| keyed_with(seeds, &[]);
    // No keys: gossip stays off; asking for it is an error naming the key.
    let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
    assert!(!c.gossip.enabled);
    assert!(c.multicast.enabled);
    let e = Config::load(None, None, &flags(&["--seed", "a.example"])).unwrap_err();
    assert!(e.to_string().starts_with("gossip.seeds:"), "{e}");
    let e = load_yaml("gossip:\n  enabled: true\n", &DaemonArgs::default()).unwrap_err();
    assert!(e.to_string().starts_with("gossip.enabled:"), "{e}");

    let c = Config::load(
        None,
        None,
        &keyed(vec![
            "seed.example",
            "198.18.1.1:4000",
            "[fd00::1]:5",
            "fd00::2",
            "h:7",
        ]),
    )
    .unwrap();
    assert!(c.gossip.enabled);
    assert_eq!(c.gossip.listen.to_string(), "0.0.0.0:32004");
    assert_eq!(c.gossip.interval, Duration::from_millis(500));
    let shown: Vec<String> = c.gossip.seeds.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        shown,
        [
            "seed.example:32004",
            "198.18.1.1:4000",
            "[fd00::1]:5",
            "[fd00::2]:32004",
            "h:7"
        ]
    );
    for bad in ["", "a b", "host:0", "host:x", "x;rm -rf /"] {
        let e = Config::load(None, None, &keyed(vec![bad])).unwrap_err();
        assert!(e.to_string().starts_with("gossip.seeds:"), "{bad:?}: {e}");
    }
    let args = keyed_with(vec![], &["--no-gossip", "--no-multicast"]);
    let c = Config::load(None, None, &args).unwrap();
    assert!(!c.gossip.enabled && !c.multicast.enabled);
    let args = keyed_with(vec![], &["--gossip-advertise", "0.0.0.0"]);
    let e = Config::load(None, None, &args).unwrap_err();
    assert!(e.to_string().starts_with("gossip.advertise:"), "{e}");
    let args = keyed_with(vec![], &["--gossip-advertise", "fd00::9"]);
    let c = Config::load(None, None, &args).unwrap();
    assert_eq!(c.gossip.listen.to_string(), "[::]:32004");
    assert_eq!(c.gossip.advertise.unwrap().to_string(), "[fd00::9]:32004");
    let e = load_yaml("gossip:\n  interval: 10ms\n", &DaemonArgs::default()).unwrap_err();
    assert!(e.to_string().starts_with("gossip.interval:"), "{e}");
}

#[test]
fn the_session_share_defaults_to_32_and_must_be_a_count() {
    let d = DaemonArgs::default();
    let c = Config::load(None, None, &d).unwrap();
    assert_eq!(c.control.max_sessions_per_user, 32);
    let c = load_yaml("control:\n  max_sessions_per_user: 4\n", &d).unwrap();
    assert_eq!(c.control.max_sessions_per_user, 4);
    // The flag wins, and is checked as the key is.
    let flagged = flags(&["--max-sessions-per-user", "7"]);
    let c = load_yaml("control:\n  max_sessions_per_user: 4\n", &flagged).unwrap();
    assert_eq!(c.control.max_sessions_per_user, 7);
    let flagged = flags(&["--max-sessions-per-user", "0"]);
    let e = Config::load(None, None, &flagged).unwrap_err().to_string();
    assert!(
        e.contains("control.max_sessions_per_user: 0 is not in 1-1024"),
        "{e}"
    );
    let flagged = flags(&["--max-sessions-per-user", "x: y"]);
    let e = Config::load(None, None, &flagged).unwrap_err().to_string();
    assert!(e.contains("is not a number"), "{e}");
    assert!(!e.contains('\n'), "{e:?}");
    for (value, want) in [
        ("0", "control.max_sessions_per_user: 0 is not in 1-1024"),
        ("-3", "control.max_sessions_per_user: -3 is not in 1-1024"),
        ("2.5", "control.max_sessions_per_user: 2.5 is not in 1-1024"),
        (
            "5000",
            "control.max_sessions_per_user: 5000 is not in 1-1024",
        ),
        (
            "lots",
            "control.max_sessions_per_user: lots is not a number",
        ),
        (
            "'32'",
            "control.max_sessions_per_user: '32' is not a number",
        ),
        (
            "[1, 2]",
            "control.max_sessions_per_user: a list is not a number",
        ),
    ] {
        let e = load_error(&format!("control:\n  max_sessions_per_user: {value}\n"), &d);
        assert!(e.contains(want), "{value}: {e}");
    }
}

#[test]
fn hooks_parse_with_defaults_and_bad_entries_name_their_key() {
    let d = DaemonArgs::default();
    let c = Config::load(None, None, &d).unwrap();
    assert!(c.hooks.is_empty());
    assert_eq!(c.hooks_max_running, 4);
    let c = load_yaml(
        "hooks:\n\
         - on: [appeared, mounted, appeared]\n\
         \x20 match: 'backup*'\n\
         \x20 local: true\n\
         \x20 run: \"'/opt/my hooks/backup' --quiet\"\n\
         \x20 timeout: 10m\n\
         - {on: peer-lost, host: 2024, local: false, allow_unsealed: true, run: [/bin/echo, 'a b']}\n\
         hooks_max_running: 2\n",
        &d,
    )
    .unwrap();
    assert_eq!(c.hooks_max_running, 2);
    let h = &c.hooks[0];
    assert_eq!(h.index, 0);
    assert_eq!(h.on, [FleetEventKind::Appeared, FleetEventKind::Mounted]);
    assert_eq!(h.run, ["/opt/my hooks/backup", "--quiet"]);
    assert_eq!(h.timeout, Duration::from_secs(600));
    assert_eq!(h.disk.text(), "backup*");
    assert!(h.host.is_any() && h.local && !h.allow_unsealed);
    let h = &c.hooks[1];
    assert_eq!(h.on, [FleetEventKind::PeerLost]);
    assert_eq!(h.host.text(), "2024");
    assert_eq!(h.run, ["/bin/echo", "a b"]);
    assert_eq!(h.timeout, DEFAULT_HOOK_TIMEOUT);
    assert!(h.allow_unsealed && h.run_as.is_none());

    let ok = "- {on: [appeared], run: x}\n";
    let cases = [
        (
            "- {on: [plugged], run: x}\n",
            "hooks[1].on: unknown event \"plugged\"",
        ),
        ("- {on: [], run: x}\n", "hooks[1].on:"),
        ("- {run: x}\n", "hooks[1].on: required"),
        ("- {on: [appeared]}\n", "hooks[1].run: required"),
        (
            "- {on: [appeared], run: []}\n",
            "hooks[1].run: must name a program",
        ),
        (
            "- {on: [appeared], run: ''}\n",
            "hooks[1].run: must name a program",
        ),
        ("- {on: [appeared], run: \"a 'b\"}\n", "hooks[1].run:"),
        (
            "- {on: [appeared], run: [\"a\\0\"]}\n",
            "hooks[1].run: word 0",
        ),
        (
            "- {on: [appeared], run: x, match: '['}\n",
            "hooks[1].match:",
        ),
        ("- {on: [appeared], run: x, host: 'a{'}\n", "hooks[1].host:"),
        (
            "- {on: [appeared], run: x, timeout: soon}\n",
            "hooks[1].timeout:",
        ),
        (
            "- {on: [appeared], run: x, timeout: 60}\n",
            "hooks[1].timeout: 60 has no unit",
        ),
        (
            "- {on: [appeared], run: x, colour: red}\n",
            "hooks[1]: unknown field `colour`",
        ),
        (
            "- {on: [appeared], run: x, local: maybe}\n",
            "hooks[1].local:",
        ),
        (
            "- {on: [peer-live], run: x, match: 'b*'}\n",
            "hooks[1].match:",
        ),
        (
            "- {on: [peer-live], run: x, local: true}\n",
            "hooks[1].local:",
        ),
        ("- a string\n", "hooks[1]: invalid type"),
        (
            "- {on: [appeared], run: x, allow_unsealed: maybe}\n",
            "hooks[1].allow_unsealed:",
        ),
        (
            "- {on: [appeared], run: x, user: no-such-user-here}\n",
            "hooks[1].user: no user \"no-such-user-here\"",
        ),
        (
            "- {on: [appeared], run: x, group: root}\n",
            "hooks[1].group: needs hooks[1].user",
        ),
        (
            "- {on: [appeared], run: x, user: root, group: no-such-group-here}\n",
            "hooks[1].group: no group \"no-such-group-here\"",
        ),
    ];
    // With keys, peers' events are sealed: hooks on them need nothing more.
    let keyed = "security:\n  key_files: [/k]\n";
    for (entry, want) in cases {
        let yaml = format!("{keyed}hooks:\n{ok}{entry}");
        let e = load_error(&yaml, &d);
        assert!(
            e.starts_with(want),
            "{yaml:?} gave {e:?}, expected {want:?}"
        );
    }
    // Peer events with a disk event besides: `match` applies to the disk events.
    load_yaml(
        &format!("{keyed}hooks:\n- {{on: [appeared, peer-live], match: 'b*', run: x}}\n"),
        &d,
    )
    .unwrap();
    for n in ["0", "257"] {
        let e = load_yaml(&format!("hooks_max_running: {n}\n"), &d).unwrap_err();
        assert!(e.to_string().starts_with("hooks_max_running:"), "{e}");
    }
}

#[test]
fn peer_limits_default_and_are_bounded() {
    let d = DaemonArgs::default();
    let c = load_yaml("", &d).unwrap();
    assert_eq!(c.peers, PeerLimits::default());
    let c = load_yaml("peers: {max: 1000, max_records: 5000}\n", &d).unwrap();
    assert_eq!((c.peers.max, c.peers.max_records), (1000, 5000));
    let flag = flags(&["--max-peers", "7"]);
    assert_eq!(
        load_yaml("peers: {max: 1000}\n", &flag).unwrap().peers.max,
        7
    );
    for (yaml, want) in [
        ("peers: {max: 0}\n", "peers.max: 0 is not in 1-1048576"),
        (
            "peers: {max: 1000000000000}\n",
            "peers.max: 1000000000000 is not in",
        ),
        (
            "peers: {max_records: 0}\n",
            "peers.max_records: must be at least 1",
        ),
        ("peers: {colour: red}\n", "unknown field"),
    ] {
        let e = load_yaml(yaml, &d).unwrap_err().to_string();
        assert!(e.contains(want), "{yaml:?}: {e}");
    }
}

#[test]
fn without_keys_a_hook_on_peers_events_must_accept_them_unsealed() {
    let d = DaemonArgs::default();
    let e = load_error(
        "hooks:\n- {on: [appeared], local: true, run: x}\n- {on: [appeared], run: x}\n",
        &d,
    );
    assert!(
        e.starts_with("hooks[1]: runs on other hosts' events"),
        "{e}"
    );
    assert!(e.contains("allow_unsealed: true"), "{e}");
    let c = load_yaml(
        "hooks:\n- {on: [appeared], local: true, run: x}\n\
         - {on: [peer-live], allow_unsealed: true, run: x}\n",
        &d,
    )
    .unwrap();
    assert!(!c.hooks[0].allow_unsealed && c.hooks[1].allow_unsealed);
}

#[test]
fn a_hook_user_is_looked_up_with_its_groups() {
    let d = DaemonArgs::default();
    let yaml = "hooks:\n- {on: [appeared], local: true, user: nobody, run: x}\n";
    if nix::unistd::geteuid().is_root() {
        let c = load_yaml(yaml, &d).unwrap();
        let who = c.hooks[0].run_as.clone().unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            (who.user.as_str(), who.uid),
            ("nobody", nobody.uid.as_raw())
        );
        assert_eq!(who.gid, nobody.gid.as_raw());
        assert_eq!(who.groups.first(), Some(&who.gid));
        let c = load_yaml(
            "hooks:\n- {on: [appeared], local: true, user: nobody, group: 0, run: x}\n",
            &d,
        )
        .unwrap();
        assert_eq!(c.hooks[0].run_as.as_ref().unwrap().gid, 0);
    } else {
        let e = load_yaml(yaml, &d).unwrap_err().to_string();
        assert!(e.contains("needs the daemon"), "{e}");
    }
}

#[test]
fn the_readmes_yaml_examples_use_real_keys() {
    // Parsed into the file's schema (unknown keys are refused there), not loaded: a key
    // file the example names does not exist here.
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "README lost its YAML examples");
    for b in blocks {
        if let Err(e) = serde_yaml::from_str::<DaemonArgs>(b) {
            panic!("README example does not parse: {e}\n{b}");
        }
    }
}

#[test]
fn the_example_config_parses_also_with_its_hooks_uncommented() {
    let text = include_str!("../../config/diskd.yaml");
    let d = DaemonArgs::default();
    let c = load_yaml(text, &d).unwrap();
    assert!(c.hooks.is_empty());
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with("hooks:") || rest.starts_with("  ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = load_yaml(&uncommented, &d).unwrap();
    assert_eq!(c.hooks.len(), 1, "{uncommented}");
    assert_eq!(c.hooks[0].run, ["/usr/local/bin/backup-to", "--quiet"]);
}

#[test]
fn loopback_is_127_8_and_ipv6_1_and_their_mapped_forms() {
    for ip in [
        "127.0.0.1",
        "127.1.2.3",
        "127.255.255.254",
        "::1",
        "::ffff:127.0.0.1",
    ] {
        assert!(is_loopback(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "0.0.0.0",
        "::",
        "198.18.0.1",
        "10.0.0.1",
        "128.0.0.1",
        "::2",
        "::ffff:198.18.0.1",
        "fe80::1",
    ] {
        assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn http_is_off_by_default_and_needs_a_token_off_loopback() {
    let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
    assert_eq!(c.http, None);
    let http = |listen: &str, token: Option<&str>| {
        let mut argv = vec!["--http", listen];
        if let Some(t) = token {
            argv.extend(["--http-token-file", t]);
        }
        flags(&argv)
    };
    // Loopback: no token needed; port 0 is allowed (a free port, shown by `status`).
    for l in ["127.0.0.1:9180", "[::1]:0", "127.0.0.2:80"] {
        let c = Config::load(None, None, &http(l, None)).unwrap();
        assert_eq!(c.http.unwrap().listen, l.parse().unwrap());
    }
    // Anywhere else: a token file, or exit 2 with one line naming the key.
    for l in [
        "0.0.0.0:9180",
        "[::]:9180",
        "198.18.0.1:9180",
        "[fd00::1]:1",
    ] {
        let e = Config::load(None, None, &http(l, None))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("http.token_file: required"), "{l}: {e}");
        assert!(!e.contains('\n'), "{e}");
        let c = Config::load(None, None, &http(l, Some("/etc/diskd/http.token"))).unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.token_file, Some(PathBuf::from("/etc/diskd/http.token")));
    }
    // From the file; the flag wins.
    let c = load_yaml(
        "http:\n  listen: 198.18.0.1:9180\n  token_file: /t\n",
        &DaemonArgs::default(),
    )
    .unwrap();
    assert_eq!(c.http.unwrap().listen.to_string(), "198.18.0.1:9180");
    let c = load_yaml(
        "http:\n  listen: 198.18.0.1:9180\n  token_file: /t\n",
        &http("127.0.0.1:1", None),
    )
    .unwrap();
    let h = c.http.unwrap();
    assert_eq!(h.listen.to_string(), "127.0.0.1:1");
    assert_eq!(h.token_file, Some(PathBuf::from("/t")));
    // A token file without a listener: nothing to serve, not an error.
    let c = load_yaml("http:\n  token_file: /t\n", &DaemonArgs::default()).unwrap();
    assert_eq!(c.http, None);
    let cases = [
        ("http:\n  listen: localhost:9180\n", "http.listen:"),
        ("http:\n  listen: 127.0.0.1\n", "http.listen:"),
        ("http:\n  listen: 127.0.0.1:99999\n", "http.listen:"),
        (
            "http:\n  listen: 230.1.2.3:80\n  token_file: /t\n",
            "http.listen:",
        ),
        ("http:\n  listn: 127.0.0.1:1\n", "listn"),
        (
            "http:\n  listen: 127.0.0.1:1\n  token_file: ''\n",
            "http.token_file:",
        ),
    ];
    for (yaml, want) in cases {
        let e = load_error(yaml, &DaemonArgs::default());
        assert!(e.contains(want), "{yaml:?} gave {e:?}, expected {want:?}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let e = Config::load(
        Some(Path::new("/nonexistent/diskd.yaml")),
        None,
        &DaemonArgs::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/diskd.yaml"));
}

#[test]
fn flags_lie_over_the_file_key_by_key() {
    let yaml = "multicast:\n  enabled: true\n  port: 5000\n  ttl: 3\n\
                mount:\n  allow: [a*, b*]\n  enabled: false\n\
                watchers:\n  disks:\n    command: [/bin/echo, hi]\n";
    // Nothing on the command line: the file's.
    let c = load_yaml(yaml, &DaemonArgs::default()).unwrap();
    assert!(c.multicast.enabled && !c.mount.enabled);
    assert_eq!((c.multicast.port, c.multicast.ttl), (5000, 3));
    assert!(c.mount.allow_set.is_match("b1"));
    // A flag replaces its key only (a list as a whole); a switch sets its key.
    let args = flags(&[
        "--ttl",
        "2",
        "--mount-allow",
        "c*",
        "--no-multicast",
        "--allow-mount",
        "--blkid",
        "/sbin/blkid -c /dev/null",
    ]);
    let c = load_yaml(yaml, &args).unwrap();
    assert!(!c.multicast.enabled && c.mount.enabled);
    assert_eq!((c.multicast.port, c.multicast.ttl), (5000, 2));
    assert!(c.mount.allow_set.is_match("c1") && !c.mount.allow_set.is_match("a1"));
    assert_eq!(c.watchers.disks.command, ["/sbin/blkid", "-c", "/dev/null"]);
    // A switch is a flag, not a key: the file cannot spell it.
    let e = load_yaml("multicast:\n  no_multicast: true\n", &DaemonArgs::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `no_multicast`"), "{e}");
}

#[test]
fn a_flag_of_null_is_refused_not_taken_for_no_flag() {
    let e = load_yaml(
        "control:\n  max_sessions_per_user: 4\n",
        &flags(&["--max-sessions-per-user", "null"]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("control.max_sessions_per_user"), "{e}");
    // A path flag that is not UTF-8 gets one line saying so.
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/\xff");
    let args = DaemonArgs::parse_from([std::ffi::OsStr::new("--store"), bad]).unwrap();
    let e = Config::load(None, None, &args).unwrap_err().to_string();
    assert!(e.contains("UTF-8") && !e.contains('\n'), "{e}");
}
