//! What packagers and operators install: the systemd unit and its config, sd_notify
//! readiness, shell completions and the man page.
//!
//! A check whose tool (systemd-analyze, man, groff, bash, zsh, fish) is missing prints a
//! `SKIPPED` line; `scripts/debian-deps --test` installs every one of them, so under
//! `DISKD_REQUIRE_ROOT_TESTS=1` (CI) a missing tool is a failure instead
//! (`util::have_or_skip`).

use crate::util;

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{bin, run_diskd, TestDaemon};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Whether `tool` is there; if not, the check is `SKIPPED` (a failure in CI).
fn have_or_skip(tool: &str, what: &str) -> bool {
    util::have_or_skip(util::on_path(tool), &format!("{tool} ({what})"))
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- the systemd unit ----

/// `key=value` lines of a unit file's `[Service]` section, comments and blank lines skipped.
fn service_directives(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have_or_skip("systemd-analyze", "the unit not verified") {
        return;
    }
    let unit = std::fs::read_to_string(repo_file("config/diskd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/diskd "),
        "the unit should start /usr/local/bin/diskd:\n{unit}"
    );
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("diskd.service");
    let exec = format!("ExecStart={} ", bin().display());
    std::fs::write(
        &copy,
        unit.replace("ExecStart=/usr/local/bin/diskd ", &exec),
    )
    .unwrap();

    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    // verify also checks Documentation=man:diskd(1) with man(1): give it our man page.
    if have_or_skip("man", "the unit's man: link not followed") {
        let man1 = dir.path().join("man/man1");
        std::fs::create_dir_all(&man1).unwrap();
        let page = run_diskd(&["man"], None);
        page.expect_code(0);
        std::fs::write(man1.join("diskd.1"), &page.out.stdout).unwrap();
        cmd.env("MANPATH", dir.path().join("man"));
    } else {
        cmd.arg("--man=no");
    }
    let out = cmd.arg(&copy).output().expect("run systemd-analyze");
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed\n{text}"
    );
    // Unknown keys and bad values are only warnings (exit 0): none may mention our unit.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("diskd.service"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze warns:\n{text}");
}

#[test]
fn unit_is_type_notify_and_never_gets_a_mount_namespace() {
    let unit = std::fs::read_to_string(repo_file("config/diskd.service")).unwrap();
    let d = service_directives(&unit);
    let get = |key: &str| -> Vec<&str> {
        d.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("StateDirectory"), ["diskd"]);
    assert_eq!(get("RuntimeDirectory"), ["diskd"]);
    assert_eq!(get("NoNewPrivileges"), ["yes"]);
    assert!(
        get("ExecStart")
            .iter()
            .any(|e| e.ends_with("daemon --config /etc/diskd/diskd.yaml")),
        "ExecStart should use /etc/diskd/diskd.yaml (config/diskd-system.yaml)"
    );
    let families = get("RestrictAddressFamilies").join(" ");
    for family in ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"] {
        assert!(families.contains(family), "{family} missing: {families}");
    }

    // Mounts made by the daemon must be seen by the whole system. Each of these settings
    // makes systemd run the service in a mount namespace of its own whose mounts do not
    // propagate back (systemd.exec(5), PrivateMounts=), so none may be switched on.
    let off = ["", "no", "false", "off", "0"];
    for key in [
        "PrivateMounts",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectSystem",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "MountAPIVFS",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "BindPaths",
        "BindReadOnlyPaths",
        "TemporaryFileSystem",
        "RootDirectory",
        "RootImage",
        "MountImages",
        "ExtensionImages",
        "MountFlags",
        "DynamicUser",
    ] {
        for value in get(key) {
            assert!(
                off.contains(&value.to_ascii_lowercase().as_str()),
                "{key}={value} gives the service its own mount namespace: mounts it makes would be invisible to the system"
            );
        }
    }
}

/// The .deb's maintainer scripts (config/deb/, packed by scripts/build-deb; scripts/check-deb
/// runs them in a scratch root in CI): valid sh, the group made with systemd-sysusers, and
/// the service never enabled or started by installing.
#[test]
fn deb_maintainer_scripts_parse_and_start_nothing() {
    for name in ["postinst", "prerm", "postrm"] {
        let path = repo_file(&format!("config/deb/{name}"));
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{name}\n{}", output_text(&out));
        let script = std::fs::read_to_string(&path).unwrap();
        for line in script.lines().map(str::trim) {
            if line.starts_with('#') || !line.contains("systemctl") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            for verb in ["enable", "start", "--now", "reenable", "unmask"] {
                assert!(!words.contains(&verb), "{name} starts diskd: {line}");
            }
        }
    }
    let postinst = std::fs::read_to_string(repo_file("config/deb/postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} diskd.conf"));
    let sysusers = std::fs::read_to_string(repo_file("config/deb/sysusers.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l == "g diskd -"), "{sysusers}");
}

#[test]
fn system_config_sets_only_the_unit_paths() {
    use diskd::config::Config;
    use diskd::flags::DaemonArgs;
    let args = DaemonArgs::default();
    let file = repo_file("config/diskd-system.yaml");
    let system = Config::load(Some(&file), None, &args).expect("config/diskd-system.yaml loads");
    assert_eq!(system.socket, Path::new("/run/diskd/diskd.sock"));
    assert_eq!(system.store, Path::new("/var/lib/diskd"));
    assert_eq!(system.socket_group.as_deref(), Some("diskd"));
    // Everything else is the default.
    let mut same = system.clone();
    let defaults = Config::load(None, None, &args).expect("defaults load");
    same.socket = defaults.socket.clone();
    same.store = defaults.store.clone();
    same.socket_group = defaults.socket_group.clone();
    assert_eq!(format!("{same:?}"), format!("{defaults:?}"));
}

// ---- sd_notify ----

/// The next notification on `sock` (one datagram, possibly several lines), or `None` when
/// nothing arrives before `deadline`.
fn next_notification(sock: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.checked_duration_since(Instant::now())?;
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Wait for a notification holding the line `want`; returns every notification read.
fn wait_notification(sock: &UnixDatagram, want: &str, d: &TestDaemon) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(msg) = next_notification(sock, deadline) {
        let done = msg.lines().any(|l| l == want);
        seen.push(msg);
        if done {
            return seen;
        }
    }
    panic!(
        "no {want} within 20s; notifications: {seen:?}\nlog:\n{}",
        d.log_text()
    );
}

#[test]
fn daemon_notifies_ready_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let mut d = TestDaemon::new("/dev/sdz1: UUID=\"1234-ABCD\" TYPE=\"vfat\"\n")
        .env("NOTIFY_SOCKET", notify.as_os_str());
    d.spawn();

    let seen = wait_notification(&sock, "READY=1", &d);
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "stopping before ready: {seen:?}"
    );
    // By READY=1 the control socket is there and answers.
    let stream = UnixStream::connect(&d.socket)
        .unwrap_or_else(|e| panic!("READY=1 sent but the socket refuses: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = String::new();
    BufReader::new(stream).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("+OK"), "greeting: {greeting:?}");

    assert_eq!(d.stop(), 0, "log:\n{}", d.log_text());
    wait_notification(&sock, "STOPPING=1", &d);
}

#[test]
fn daemon_without_notify_socket_runs_as_before() {
    // NOTIFY_SOCKET unset (TestDaemon removes it): nothing to notify, nothing logged.
    let mut d = TestDaemon::new("").start();
    assert_eq!(d.stop(), 0);
    let log = d.log_text();
    assert!(!log.contains("NOTIFY_SOCKET"), "log:\n{log}");
}

// ---- completions and the man page ----

#[test]
fn completions_name_the_commands_and_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = run_diskd(&["completions", shell], None);
        r.expect_code(0);
        let text = r.stdout();
        for word in ["query", "mount", "keygen"] {
            assert!(
                text.contains(word),
                "{shell} completions lack {word}:\n{text}"
            );
        }
        for flag in ["json", "key-file", "socket"] {
            // fish writes `-l json` for --json.
            let word = match shell {
                "fish" => format!("-l {flag}"),
                _ => format!("--{flag}"),
            };
            assert!(
                text.contains(&word),
                "{shell} completions lack {word}:\n{text}"
            );
        }
    }
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let r = run_diskd(&["completions", "tcsh"], None);
    r.expect_code(2);
    assert!(r.stderr().contains("bash"), "{}", r.stderr());
}

/// Check a completion script's syntax with its own shell, when that shell is installed.
fn check_syntax(shell: &str, check: &[&str]) {
    if !have_or_skip(shell, "completion syntax not checked") {
        return;
    }
    let r = run_diskd(&["completions", shell], None);
    r.expect_code(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("diskd.{shell}"));
    std::fs::write(&file, r.stdout()).unwrap();
    let out = Command::new(shell)
        .args(check)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("run {shell}: {e}"));
    assert!(
        out.status.success(),
        "{shell} rejects the completions\n{}",
        output_text(&out)
    );
}

#[test]
fn bash_completions_parse() {
    check_syntax("bash", &["-n"]);
}

#[test]
fn zsh_completions_parse() {
    check_syntax("zsh", &["-n"]);
}

#[test]
fn fish_completions_parse() {
    check_syntax("fish", &["--no-execute"]);
}

#[test]
fn man_page_is_roff_and_documents_every_command() {
    let r = run_diskd(&["man"], None);
    r.expect_code(0);
    let page = r.stdout();
    assert!(page.starts_with(".TH DISKD 1 "), "{page}");
    // In roff, a dash is `\-`.
    for word in [
        ".SS \"diskd query\"",
        ".SS \"diskd mount\"",
        ".SS \"diskd daemon\"",
        "\\-\\-key\\-file",
        "\\-\\-json",
        "DISKD_SOCKET",
        "NOTIFY_SOCKET",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(page.contains(word), "the man page lacks {word}:\n{page}");
    }

    if have_or_skip("groff", "man page not typeset") {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(page.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff warns about the man page\n{}",
            output_text(&out)
        );
    }
}
