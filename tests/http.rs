//! The read-only HTTP listener: the JSON API against the CLI's JSON, `/metrics` through
//! Prometheus's own parser, the event stream, the token rules, a flood, and the web page in
//! headless Chromium. In the root namespace the listener binds 127.0.0.1 only (port 0; the
//! daemon tells the port in `status --json`); anything bound elsewhere runs in the lab.
//!
//! Tools used only here: Debian's python3-prometheus-client (/usr/bin/python3, not a pyenv
//! python3 on PATH) and chromium, both installed by `scripts/debian-deps --test`. Without them a test
//! prints `SKIPPED`; under `DISKD_REQUIRE_ROOT_TESTS=1` (CI) it fails instead.

use crate::util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use diskd_lab::{disk_line, wait_for, Lab};
use serde_json::Value;
use util::TestDaemon;

const UA: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const UB: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const UC: &str = "cccccccc-0000-4000-8000-00000000000c";
const LONG: Duration = Duration::from_secs(20);

// ---- a tiny HTTP/1.1 client (std only) ----

/// One response as received.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}\n{}", self.text()))
    }
}

/// `METHOD PATH` with extra headers, `Connection: close`; the whole response.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(LONG)).unwrap();
    s.set_write_timeout(Some(LONG)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse(&raw).unwrap_or_else(|| panic!("{method} {path}: not HTTP: {raw:?}"))
}

fn get(addr: &str, path: &str) -> Resp {
    request(addr, "GET", path, &[])
}

/// Parse a whole response (de-chunking a chunked body).
fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// An open `/api/v1/events` stream.
struct Events {
    status: u16,
    head: String,
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(addr: &str, headers: &[(&str, &str)]) -> Events {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut req = format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Events {
            status,
            head,
            reader,
        }
    }

    /// The next `data:` line's JSON (chunk-size lines, blank lines and keep-alive
    /// comments skipped); `None` at the end of the stream.
    fn next(&mut self) -> Option<Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(data).unwrap());
            }
            if line == "0" {
                // The last chunk: the stream ended.
                return None;
            }
        }
    }
}

// ---- helpers ----

/// A daemon serving HTTP on 127.0.0.1 (a free port, read back from `status`), scans only
/// when told (`refresh`), so two answers taken a moment apart are the same.
fn daemon(blkid: &str, extra: &[&str]) -> (TestDaemon, String) {
    let mut d = TestDaemon::new(blkid)
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--disk-interval")
        .arg("1h")
        .arg("--mount-interval")
        .arg("1h");
    for a in extra {
        d = d.arg(a);
    }
    let d = d.start();
    let addr = http_addr(&d.status_json());
    (d, addr)
}

fn http_addr(status: &Value) -> String {
    let addr = status["http"]
        .as_str()
        .unwrap_or_else(|| panic!("no http address in status: {status}"))
        .to_string();
    assert!(!addr.ends_with(":0"), "{addr}");
    addr
}

fn cli_json(d: &TestDaemon, args: &[&str]) -> (i32, Value) {
    let r = d.client(args);
    (r.code(), r.json())
}

fn have_prometheus_parser() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have_chromium() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Metric families as Prometheus's own Python parser reads `text`: name -> (type,
/// [(sample name, labels, value)]).
fn parse_metrics(text: &str, openmetrics: bool) -> Value {
    let module = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        "import sys, json\n\
         from {module} import text_string_to_metric_families\n\
         out = {{}}\n\
         for f in text_string_to_metric_families(sys.stdin.read()):\n\
         \x20   out[f.name] = {{'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}}\n\
         print(json.dumps(out))\n"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = &families[family];
    assert!(f.is_object(), "no family {family} in {families}");
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {f}"))[2]
        .as_f64()
        .unwrap()
}

fn write_token(path: &Path, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn two_disks() -> String {
    format!(
        "{}{}",
        disk_line("/dev/sdb1", UA, "photos"),
        disk_line("/dev/sdc1", UB, "my <b>backup</b> & 'disk'")
    )
}

// ---- tests ----

#[test]
fn the_api_answers_exactly_what_the_cli_prints() {
    let (d, addr) = daemon(&two_disks(), &[]);
    // A disk that left: a last-known record (and a history with an ended stay).
    d.wait_query(UB);
    util::fake_blkid(&d.blkid, &disk_line("/dev/sdb1", UA, "photos"));
    d.client(&["refresh"]).expect_code(0);

    let r = get(&addr, "/api/v1/disks");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let (code, cli) = cli_json(&d, &["list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(r.json(), cli);
    assert_eq!(cli.as_array().unwrap().len(), 2, "{cli}");

    for term in ["photos", UB, "/dev/sdb1", "my <b>backup</b> & 'disk'"] {
        let q: String = url_encode(term);
        let r = get(&addr, &format!("/api/v1/disks?q={q}"));
        let (code, cli) = cli_json(&d, &["query", term, "--json"]);
        assert_eq!((r.status, code), (200, 0), "{term}");
        assert_eq!(r.json(), cli, "{term}");

        let r = get(&addr, &format!("/api/v1/disks/{q}/history"));
        let (code, cli) = cli_json(&d, &["history", term, "--json"]);
        assert_eq!((r.status, code), (200, 0), "{term}");
        assert_eq!(r.json(), cli, "{term}");
    }
    // No match: the CLI exits 1 printing `[]`; HTTP says 404 with the same `[]`.
    let (code, cli) = cli_json(&d, &["query", "nothing-like-it", "--json"]);
    assert_eq!((code, cli.clone()), (1, serde_json::json!([])));
    let r = get(&addr, "/api/v1/disks?q=nothing-like-it");
    assert_eq!((r.status, r.text().as_str()), (404, "[]"));
    let r = get(&addr, "/api/v1/disks/nothing-like-it/history");
    assert_eq!((r.status, r.text().as_str()), (404, "[]"));

    let r = get(&addr, "/api/v1/peers");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), cli_json(&d, &["peers", "--json"]).1);

    // Status: the same report; counters and uptime move between two calls.
    let r = get(&addr, "/api/v1/status");
    assert_eq!(r.status, 200);
    let (api, cli) = (r.json(), d.status_json());
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&api), keys(&cli));
    for k in [
        "node",
        "node_id",
        "version",
        "store",
        "http",
        "disks_known",
        "peers",
    ] {
        assert_eq!(api[k], cli[k], "{k}");
    }
    assert_eq!(api["http"], addr.as_str());

    // Read-only, whatever the path; errors are JSON.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/api/v1/disks", "/", "/nowhere"] {
            let r = request(&addr, method, path, &[("Content-Length", "0")]);
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
            assert!(r.json()["error"].as_str().unwrap().contains("read-only"));
        }
    }
    let r = get(&addr, "/api/v2/disks");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = get(&addr, "/api/v1/disks?host=x");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("host"),
        "{r:?}"
    );
    let r = get(&addr, "/api/v1/disks/%FF%FE/history");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"].is_string());
    let r = request(&addr, "HEAD", "/api/v1/disks", &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));

    // The page: self-contained, with a policy that allows nothing from elsewhere.
    let r = get(&addr, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(r.text().contains("<title>diskd</title>"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // Bad input never hurts the daemon.
    assert_eq!(d.client(&["status"]).code(), 0);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn metrics_parse_with_prometheus_own_parser_and_count_right() {
    if !util::have_or_skip(
        have_prometheus_parser(),
        "/usr/bin/python3 with prometheus_client (Debian python3-prometheus-client)",
    ) {
        return;
    }
    let (d, addr) = daemon(&two_disks(), &[]);
    d.wait_query(UB);
    util::fake_blkid(&d.blkid, &disk_line("/dev/sdb1", UA, "photos"));
    d.client(&["refresh"]).expect_code(0);
    let listed = cli_json(&d, &["list", "--json"]).1;
    let live = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["live"] == true)
        .count();
    assert_eq!((live, listed.as_array().unwrap().len()), (1, 2), "{listed}");

    let r = get(&addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let f = parse_metrics(&r.text(), false);
    let status = d.status_json();
    assert_eq!(f["diskd_disks"]["type"], "gauge");
    assert_eq!(
        sample(&f, "diskd_disks", "diskd_disks", &[("state", "live")]),
        live as f64
    );
    assert_eq!(
        sample(&f, "diskd_disks", "diskd_disks", &[("state", "last_known")]),
        1.0
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &f,
            "diskd_build_info",
            "diskd_build_info",
            &[("version", version)]
        ),
        1.0
    );
    for (family, kind) in [
        ("diskd_packets_received", "counter"),
        ("diskd_packets_sent", "counter"),
        ("diskd_announces", "counter"),
        ("diskd_pings", "counter"),
        ("diskd_watcher_scans", "counter"),
        ("diskd_sent_bytes", "counter"),
        ("diskd_control_sessions_accepted", "counter"),
        ("diskd_control_sessions_open", "gauge"),
        ("diskd_store_size_bytes", "gauge"),
        ("diskd_store_records", "gauge"),
        ("diskd_peers", "gauge"),
        ("diskd_watcher_last_success_timestamp_seconds", "gauge"),
        ("diskd_http_connections_open", "gauge"),
    ] {
        assert_eq!(f[family]["type"], kind, "{family} in {f}");
    }
    // Counters carry `_total`, and their values are the status counters.
    let sent = sample(&f, "diskd_packets_sent", "diskd_packets_sent_total", &[]);
    assert!(sent >= 1.0 && sent <= status["counters"]["packets_sent"].as_f64().unwrap());
    assert_eq!(
        sample(
            &f,
            "diskd_pings",
            "diskd_pings_total",
            &[("result", "answered")]
        ),
        0.0
    );
    // Good disk scans: the start and the refresh at least (a parallel test's loop device
    // sends block events, which scan too), and no more than `status`, read after, counts.
    let scans = sample(
        &f,
        "diskd_watcher_scans",
        "diskd_watcher_scans_total",
        &[("watcher", "disks"), ("result", "ok")],
    );
    let scans_ok = status["watchers"]["disks"]["scans_ok"].as_f64().unwrap();
    assert!(
        scans >= 2.0 && scans <= scans_ok,
        "{scans} vs status {scans_ok}"
    );
    let last_ok = sample(
        &f,
        "diskd_watcher_last_success_timestamp_seconds",
        "diskd_watcher_last_success_timestamp_seconds",
        &[("watcher", "disks")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last_ok).abs() < 60.0, "{last_ok} vs {now}");
    assert!(sample(&f, "diskd_store_size_bytes", "diskd_store_size_bytes", &[]) > 0.0);
    assert_eq!(
        sample(&f, "diskd_store_records", "diskd_store_records", &[]),
        status["store_records"].as_f64().unwrap()
    );
    assert!(
        sample(
            &f,
            "diskd_control_sessions_accepted",
            "diskd_control_sessions_accepted_total",
            &[]
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &f,
            "diskd_peers",
            "diskd_peers",
            &[("state", "live"), ("via", "multicast")]
        ),
        0.0
    );
    // The scrape itself is an open connection.
    assert_eq!(
        sample(
            &f,
            "diskd_http_connections_open",
            "diskd_http_connections_open",
            &[]
        ),
        1.0
    );

    // SMART health (once readings reach the store): one series per state of each physical
    // disk, exactly one of them 1. Absent while no disk has a reading.
    if let Some(samples) = f["diskd_disk_health"]["samples"].as_array() {
        assert_eq!(f["diskd_disk_health"]["type"], "gauge");
        let mut current = std::collections::HashMap::new();
        for s in samples {
            for k in ["host", "device", "serial", "state"] {
                assert!(s[1][k].is_string(), "no {k} in {s}");
            }
            let disk = (s[1]["host"].to_string(), s[1]["device"].to_string());
            *current.entry(disk).or_insert(0.0) += s[2].as_f64().unwrap();
        }
        assert!(current.values().all(|&n| n == 1.0), "{samples:?}");
    }

    // OpenMetrics, for a scraper that asks for it.
    let r = request(
        &addr,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.text().ends_with("# EOF\n"));
    let f = parse_metrics(&r.text(), true);
    assert_eq!(
        sample(&f, "diskd_disks", "diskd_disks", &[("state", "live")]),
        1.0
    );
    assert_eq!(f["diskd_build"]["type"], "info", "{f}");
}

#[test]
fn the_event_stream_delivers_a_new_disk_as_events_json_does() {
    let (d, addr) = daemon(&disk_line("/dev/sdb1", UA, "photos"), &[]);
    d.wait_query(UA);
    let mut sse = Events::open(&addr, &[]);
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(
        sse.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        sse.head
    );
    // The CLI's stream, to compare with.
    let cli = d.listening(&["events", "--json"]);
    util::fake_blkid(
        &d.blkid,
        &format!(
            "{}{}",
            disk_line("/dev/sdb1", UA, "photos"),
            disk_line("/dev/sdd1", UC, "new disk")
        ),
    );
    d.client(&["refresh"]).expect_code(0);
    let ev = sse.next().expect("an event");
    assert_eq!(ev["event"], "appeared", "{ev}");
    assert_eq!(ev["uuid"], UC);
    assert_eq!(ev["label"], "new disk");
    assert_eq!(ev["device"], "/dev/sdd1");
    assert_eq!(ev["local"], true);
    wait_for("the CLI's event", LONG, || !cli.lines().is_empty());
    assert_eq!(
        ev,
        cli.objects()[0],
        "the SSE object is the events --json object"
    );
    drop(cli);

    // The stream ends when the daemon stops.
    let mut d = d;
    let start = Instant::now();
    assert_eq!(d.stop(), 0);
    while sse.next().is_some() {}
    assert!(start.elapsed() < LONG);
}

#[test]
fn a_token_is_required_where_one_is_configured_and_loopback_needs_none() {
    // Loopback without a token: open.
    let (d, addr) = daemon("", &[]);
    assert_eq!(get(&addr, "/api/v1/disks").status, 200);
    let port = addr.rsplit(':').next().unwrap();
    let local = format!("localhost:{port}");
    let r = request(&addr, "GET", "/api/v1/disks", &[("Host", &local)]);
    assert_eq!(r.status, 200);
    // A page of another name pointed at 127.0.0.1 (DNS rebinding) reads nothing.
    let evil = format!("evil.example:{port}");
    let r = request(&addr, "GET", "/api/v1/disks", &[("Host", &evil)]);
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("loopback Host"));
    drop(d);

    // A token file on loopback: every request needs it, the event stream too.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("http.token");
    write_token(&token, "Zm9vYmFy-token_1234", 0o600);
    let (_d, addr) = daemon("", &["--http-token-file", token.to_str().unwrap()]);
    for path in [
        "/",
        "/metrics",
        "/api/v1/disks",
        "/api/v1/status",
        "/nowhere",
    ] {
        let r = get(&addr, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"diskd\""));
        assert!(r.json()["error"].is_string());
        let r = request(&addr, "GET", path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(r.status, 401, "{path}");
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"));
        let r = request(&addr, "GET", path, &[("Authorization", "Basic Zm9vYmFy")]);
        assert_eq!(r.status, 401, "{path}");
        // The token's query-string form is not accepted (see docs/http-and-metrics.md).
        let r = get(&addr, &format!("{path}?token=Zm9vYmFy-token_1234"));
        assert_eq!(r.status, 401, "{path}");
    }
    let auth = [("Authorization", "Bearer Zm9vYmFy-token_1234")];
    assert_eq!(request(&addr, "GET", "/api/v1/disks", &auth).status, 200);
    assert_eq!(request(&addr, "GET", "/", &auth).status, 200);
    let lower = [("authorization", "bearer Zm9vYmFy-token_1234")];
    assert_eq!(request(&addr, "GET", "/metrics", &lower).status, 200);
    assert_eq!(Events::open(&addr, &[]).status, 401);
    assert_eq!(Events::open(&addr, &auth).status, 200);
    // An unauthenticated write is refused for the token first.
    assert_eq!(
        request(&addr, "POST", "/", &[("Content-Length", "0")]).status,
        401
    );
    assert_eq!(
        request(&addr, "POST", "/", &[auth[0], ("Content-Length", "0")]).status,
        405
    );
}

#[test]
fn a_bad_http_setup_stops_the_daemon_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.token");
    write_token(&open, "abc", 0o644);
    let empty = dir.path().join("empty.token");
    write_token(&empty, "", 0o600);
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--http".into(),
                "127.0.0.1:1".into(),
                "--http-token-file".into(),
                open.display().to_string(),
            ],
            format!("http.token_file {}: mode 644", open.display()),
        ),
        (
            vec![
                "--http".into(),
                "127.0.0.1:1".into(),
                "--http-token-file".into(),
                empty.display().to_string(),
            ],
            format!("http.token_file {}: empty", empty.display()),
        ),
        (
            vec![
                "--http".into(),
                "127.0.0.1:1".into(),
                "--http-token-file".into(),
                "/nonexistent/t".into(),
            ],
            "http.token_file /nonexistent/t:".into(),
        ),
        (
            vec!["--http".into(), taken_addr.clone()],
            format!("http.listen {taken_addr}:"),
        ),
        (
            vec!["--http".into(), "localhost:80".into()],
            "http.listen:".into(),
        ),
        (
            vec!["--http".into(), "127.0.0.1".into()],
            "http.listen:".into(),
        ),
    ];
    for (args, want) in cases {
        let mut d = TestDaemon::new("");
        for a in &args {
            d = d.arg(a);
        }
        let (code, stderr) = d.run_expect_exit_within(LONG);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let line = format!("diskd: {want}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&line),
            "{args:?}: {stderr:?}, expected {line:?}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("diskd:")).count(),
            1,
            "{stderr}"
        );
    }
    drop(taken);
}

#[test]
fn a_flood_of_http_requests_leaves_the_control_socket_answering() {
    let disks: String = (0..50)
        .map(|i| {
            disk_line(
                &format!("/dev/sd{i}"),
                &format!("0000{i:04}-0000-4000-8000-000000000000"),
                &format!("disk {i}"),
            )
        })
        .collect();
    let (mut d, addr) = daemon(&disks, &[]);
    const CLIENTS: usize = 1000;
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, start) = (addr.clone(), start.clone());
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    start.wait();
                    let path = match i % 4 {
                        0 => "/metrics",
                        1 => "/api/v1/status",
                        _ => "/api/v1/disks",
                    };
                    let mut s = TcpStream::connect(&addr).map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
                    s.write_all(
                        format!(
                            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .map_err(|e| format!("write: {e}"))?;
                    let mut raw = Vec::new();
                    match s.read_to_end(&mut raw) {
                        // Past its limits the daemon may close a connection unanswered.
                        Ok(0) => return Ok(0),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(0),
                        Err(e) => return Err(format!("read: {e}")),
                        Ok(_) => {}
                    }
                    parse(&raw)
                        .map(|r| r.status)
                        .ok_or_else(|| format!("not HTTP: {:?}", String::from_utf8_lossy(&raw)))
                })
                .unwrap()
        })
        .collect();
    let began = Instant::now();
    start.wait();
    // The control socket answers while the flood goes on.
    let mut answered_during = 0;
    let mut slowest = Duration::ZERO;
    while threads.iter().any(|t| !t.is_finished()) {
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the flood did not end within 120 s"
        );
        let t = Instant::now();
        d.client(&["status"]).expect_code(0);
        slowest = slowest.max(t.elapsed());
        answered_during += 1;
    }
    let took = began.elapsed();
    let outcomes: Vec<Result<u16, String>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = outcomes.iter().filter(|o| **o == Ok(200)).count();
    let busy = outcomes.iter().filter(|o| **o == Ok(503)).count();
    let closed = outcomes.iter().filter(|o| **o == Ok(0)).count();
    let other: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok(200) | Ok(503) | Ok(0)))
        .collect();
    eprintln!(
        "flood: {CLIENTS} requests in {took:?}: {ok} answered, {busy} turned away (503), \
         {closed} closed unanswered, {} other; status answered {answered_during} times \
         meanwhile, slowest {slowest:?}",
        other.len()
    );
    assert!(other.is_empty(), "{other:?}");
    assert!(ok >= 256, "only {ok} of {CLIENTS} answered");
    assert!(answered_during >= 1);
    assert!(slowest < Duration::from_secs(10), "status took {slowest:?}");
    // Still alive, still serving both doors.
    assert!(d.exited().is_none(), "the daemon died: {}", d.log_text());
    d.client(&["status"]).expect_code(0);
    assert_eq!(
        get(&addr, "/api/v1/disks").json().as_array().unwrap().len(),
        50
    );
    // Every flood connection is closed (the scrape's own is the one left open).
    wait_for("the flood's connections to close", LONG, || {
        get(&addr, "/metrics")
            .text()
            .lines()
            .any(|l| l == "diskd_http_connections_open 1")
    });
}

#[test]
fn slow_and_idle_clients_lose_their_connection_at_the_head_deadline() {
    let (_d, addr) = daemon("", &[]);
    // Silent; half a request head; one request answered, then idle on keep-alive.
    let cases: [&[u8]; 3] = [
        b"",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /api/v1/peers HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .map(|send| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let start = Instant::now();
                s.write_all(send).unwrap();
                let mut got = Vec::new();
                let end = s.read_to_end(&mut got);
                (start.elapsed(), end.map_err(|e| e.to_string()), got)
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (took, end, got) = t.join().unwrap();
        assert!(end.is_ok(), "case {i}: {end:?}");
        assert!(
            took >= Duration::from_secs(9) && took < Duration::from_secs(20),
            "case {i}: closed after {took:?}"
        );
        assert_eq!(
            got.starts_with(b"HTTP/1.1 200"),
            i == 2,
            "case {i}: {got:?}"
        );
    }
}

#[test]
fn a_client_that_stops_reading_a_response_loses_its_connection() {
    // A large answer (about 6 MB of JSON), more than the kernel buffers on both sides hold.
    let (d, addr) = daemon("", &[]);
    util::script(
        &d.blkid,
        "i=0; while [ $i -lt 16000 ]; do i=$((i+1)); \
         echo \"/dev/sdx$i: UUID=\\\"$i-0000-4000-8000-000000000000\\\" \
         LABEL=\\\"a label long enough to make the answer big $i\\\" TYPE=\\\"ext4\\\"\"; done",
    );
    d.client(&["refresh"]).expect_code(0);
    // A client with a small receive buffer asks, then never reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    sock.connect(&target.into()).unwrap();
    let mut stalled: TcpStream = sock.into();
    // Each scrape counts itself among the requests.
    let before = metric(&addr, "diskd_http_requests_total");
    stalled
        .write_all(b"GET /api/v1/disks HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    wait_for("the stalled request to be taken", LONG, || {
        metric(&addr, "diskd_http_requests_total") >= before + 2
    });
    // Its connection is held while the response cannot go out (this scrape is the other)...
    assert_eq!(metric(&addr, "diskd_http_connections_open"), 2);
    // ...and closed once nothing of it has been taken for the write deadline.
    wait_for(
        "the stalled connection to be closed",
        Duration::from_secs(60),
        || metric(&addr, "diskd_http_connections_open") == 1,
    );
    drop(stalled);
}

/// A gauge or counter's value in `/metrics` (unlabelled).
fn metric(addr: &str, name: &str) -> u64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// The Chromium command line of these tests, with a fresh profile.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

#[test]
fn the_page_updates_live_in_chromium() {
    if !util::have_or_skip(have_chromium(), "chromium (Debian package chromium)") {
        return;
    }
    let (mut d, addr) = daemon(&disk_line("/dev/sdb1", UA, "photos"), &[]);
    d.wait_query(UA);
    // The live page (no `?live=0`). Its open event stream stops Chromium's virtual clock,
    // so Chromium renders, then waits: for the change below, and for the daemon to stop
    // (which ends the stream, lets the clock run out and the DOM be dumped).
    let profile = tempfile::tempdir().unwrap();
    let chromium = Command::new("timeout")
        .args(["60", "chromium"])
        .args(chromium_args(profile.path()))
        .args(["--dump-dom", &format!("http://{addr}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the page's event stream", LONG, || {
        metric(&addr, "diskd_http_event_streams") == 1
    });
    let before = metric(&addr, "diskd_http_requests_total");
    util::fake_blkid(
        &d.blkid,
        &format!(
            "{}{}",
            disk_line("/dev/sdb1", UA, "photos"),
            disk_line("/dev/sde1", UC, "plugged-in-now")
        ),
    );
    d.client(&["refresh"]).expect_code(0);
    // The page re-fetches the disks and peers on the event (2 requests besides ours).
    let mut scrapes = 0;
    wait_for("the page to re-fetch on the event", LONG, || {
        scrapes += 1;
        metric(&addr, "diskd_http_requests_total") >= before + scrapes + 2
    });
    assert_eq!(d.stop(), 0);
    let out = chromium.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium: {:?}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<span class=\"label\">plugged-in-now</span>"),
        "the new disk is not in the table:\n{dom}"
    );
    assert!(
        dom.contains(
            "<span class=\"kind\">appeared</span><span>test-node /dev/sde1 plugged-in-now</span>"
        ),
        "the event is not in the recent changes:\n{dom}"
    );
}

/// `/api/v1/disks` rows carry `health` and `fs_size`/`fs_used`/`fs_avail` as `list --json`
/// does: null while unknown (no SMART reading, nothing measured), never missing. (Rows with
/// known values are checked in `http::api`'s unit tests.)
#[test]
fn disk_rows_carry_health_and_capacity_null_when_unknown() {
    let (d, addr) = daemon(&two_disks(), &[]);
    d.wait_query(UB);
    let r = get(&addr, "/api/v1/disks");
    assert_eq!(r.status, 200);
    let rows = r.json();
    assert_eq!(rows, cli_json(&d, &["list", "--json"]).1);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    for row in rows.as_array().unwrap() {
        let row = row.as_object().unwrap();
        for k in ["health", "fs_size", "fs_used", "fs_avail"] {
            assert_eq!(row.get(k), Some(&Value::Null), "{k} in {row:?}");
        }
    }
}

/// A static stand-in for the listener: serves `page` (with the daemon's own
/// Content-Security-Policy) at `/` and canned JSON at the API paths the page reads, until
/// dropped. The page's health badge and use bar need rows with a SMART reading and
/// filesystem figures, which no daemon produces yet (the SMART watcher and the store's
/// carriage of both are not in this build).
struct CannedApi {
    addr: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CannedApi {
    fn start(page: String, csp: String, disks: Value) -> CannedApi {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (page, csp, disks) = (Arc::new(page), Arc::new(csp), Arc::new(disks));
        // A thread per connection: a connection Chromium opens ahead and leaves idle must
        // not hold up the others.
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (page, csp, disks) = (page.clone(), csp.clone(), disks.clone());
                std::thread::spawn(move || CannedApi::answer(conn, &page, &csp, &disks));
            }
        });
        CannedApi {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// One request on `conn`, answered and closed.
    fn answer(mut conn: TcpStream, page: &str, csp: &str, disks: &Value) {
        let _ = conn.set_read_timeout(Some(LONG));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let target = head.split(' ').nth(1).unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        let (status, kind, body, extra) = match path {
            "/" => (
                "200 OK",
                "text/html; charset=utf-8",
                page.to_string(),
                format!("Content-Security-Policy: {csp}\r\n"),
            ),
            "/api/v1/disks" => ("200 OK", "application/json", disks.to_string(), "".into()),
            "/api/v1/peers" => ("200 OK", "application/json", "[]".into(), "".into()),
            "/api/v1/status" => (
                "200 OK",
                "application/json",
                r#"{"node":"canned"}"#.into(),
                "".into(),
            ),
            _ => (
                "404 Not Found",
                "application/json",
                r#"{"error":"no such endpoint"}"#.into(),
                "".into(),
            ),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     {extra}Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes());
    }
}

impl Drop for CannedApi {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_page_shows_health_badges_and_use_bars_in_chromium() {
    if !util::have_or_skip(have_chromium(), "chromium (Debian package chromium)") {
        return;
    }
    // The page, its policy, and a row exactly as the daemon serves them.
    let (d, addr) = daemon(&disk_line("/dev/sdb1", UA, "photos"), &[]);
    d.wait_query(UA);
    let page = get(&addr, "/");
    let csp = page.header("content-security-policy").unwrap().to_string();
    let template = get(&addr, "/api/v1/disks").json()[0].clone();
    for k in [
        "health", "fs_size", "fs_used", "fs_avail", "parent", "live", "label",
    ] {
        assert!(
            template.get(k).is_some(),
            "no {k} in a disk row: {template}"
        );
    }
    let hostile_reason = "<img src=x onerror=alert(1)> \"quoted\"\nsecond line";
    let row = |device: &str, label: &str, live: bool, health: Value, fs: [Option<u64>; 3]| {
        let mut r = template.clone();
        r["device"] = device.into();
        r["parent"] = device.trim_end_matches(char::is_numeric).into();
        r["label"] = label.into();
        r["uuid"] = Value::Null;
        r["live"] = live.into();
        r["health"] = health;
        r["fs_size"] = fs[0].into();
        r["fs_used"] = fs[1].into();
        r["fs_avail"] = fs[2].into();
        r
    };
    let health = |state: &str, reasons: &[&str]| {
        serde_json::json!({
            "state": state, "reasons": reasons, "temperature_c": 41, "power_on_hours": 1234,
            "reallocated_sectors": 8, "pending_sectors": null, "media_errors": null,
            "percentage_used": null, "checked": "2026-12-06T10:00:00Z",
        })
    };
    // In the API's order (live first); the page must put failing, then warning, first.
    let disks = Value::Array(vec![
        row(
            "/dev/sdb1",
            "photos",
            true,
            health("ok", &[]),
            [Some(1000), Some(600), Some(350)],
        ),
        row(
            "/dev/sdc1",
            "archive",
            true,
            health("warning", &["8 reallocated sectors"]),
            [None, None, None],
        ),
        row(
            "/dev/sdd1",
            "evil \"<b>x</b>\"",
            true,
            health(
                "failing",
                &[
                    "SMART overall-health self-assessment: FAILED",
                    hostile_reason,
                ],
            ),
            [Some(100), Some(95), Some(5)],
        ),
        row(
            "/dev/sde1",
            "usb-stick",
            true,
            Value::Null,
            [None, None, None],
        ),
        row(
            "/dev/sdf1",
            "gone-bad",
            false,
            health("failing", &["was failing"]),
            [None, None, None],
        ),
    ]);
    let api = CannedApi::start(page.text(), csp, disks);

    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["60", "chromium"])
        .args(chromium_args(profile.path()))
        .args(["--dump-dom", &format!("http://{}/?live=0", api.addr)])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    drop(api);
    assert!(out.status.success(), "chromium: {:?}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<p class=\"error\" id=\"problem\" hidden=\"\">"),
        "the page shows an error:\n{dom}"
    );

    // Failing first (the live one, then the last-known one), then warning, then the rest.
    let at = |label: &str| {
        dom.find(&format!("<span class=\"label\">{label}</span>"))
            .unwrap_or_else(|| panic!("no row {label:?}:\n{dom}"))
    };
    let order = [
        at("evil \"&lt;b&gt;x&lt;/b&gt;\""),
        at("gone-bad"),
        at("archive"),
        at("photos"),
        at("usb-stick"),
    ];
    assert!(order.is_sorted(), "rows out of order {order:?}:\n{dom}");

    // A badge per disk with a reading, its reasons in the title; none without one.
    for state in ["ok", "warning", "failing"] {
        assert!(
            dom.contains(&format!("<span class=\"badge {state}\"")),
            "no {state} badge:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("<span class=\"badge failing\"").count(),
        2,
        "{dom}"
    );
    assert!(
        dom.contains(
            "title=\"8 reallocated sectors\nchecked 2026-12-06T10:00:00Z\">warning</span>"
        ),
        "the warning badge's reasons:\n{dom}"
    );
    assert!(dom.contains("title=\"SMART overall-health self-assessment: FAILED\n"));
    // The hostile reason is text in an attribute, never an element.
    assert!(
        dom.contains("onerror=alert(1)&gt; &quot;quoted&quot;\nsecond line")
            || dom.contains("onerror=alert(1)> &quot;quoted&quot;\nsecond line"),
        "the hostile reason is not escaped text:\n{dom}"
    );
    assert!(!dom.contains("<img"), "a reason became markup:\n{dom}");
    assert!(!dom.contains("<b>x</b>"), "a label became markup:\n{dom}");

    // The use bars: df's USE% (used / (used + avail), rounded up), the width set through
    // the CSSOM (allowed by the page's policy), colour classes past 80 and 90 %.
    assert!(
        dom.contains(
            "<span class=\"bar\" role=\"meter\" aria-valuemin=\"0\" aria-valuemax=\"100\" \
             aria-valuenow=\"64\" aria-label=\"Filesystem use\"><span style=\"width: 64%;\">\
             </span></span><span>64%</span>"
        ),
        "no 64% bar for photos:\n{dom}"
    );
    assert!(
        dom.contains("<span class=\"bar full\"") && dom.contains("<span>95%</span>"),
        "no full bar for the failing disk:\n{dom}"
    );
    assert_eq!(dom.matches("role=\"meter\"").count(), 2, "{dom}");
    // The header counts live physical disks in trouble.
    assert!(dom.contains("; 1 disk failing, 1 warning</span>"), "{dom}");
    drop(d);
}

// ---- in the lab: a non-loopback listener, and the page in Chromium ----

/// `curl` in a host's namespace: (status, body). Headers as `-H` arguments.
fn curl(h: &diskd_lab::Host, url: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec!["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    for hd in headers {
        args.extend(["-H", hd]);
    }
    args.push(url);
    let out = h.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
#[ignore = "needs root"]
fn lab_a_listener_off_loopback_needs_the_token() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "2s"]);
    let token = lab.host("a").dir.join("http.token");
    write_token(&token, "lab-token-0123456789abcdef", 0o600);
    let a_addr = lab.host("a").addr.clone();
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    let args = [
        "--http".to_string(),
        format!("{a_addr}:0"),
        "--http-token-file".to_string(),
        token.display().to_string(),
    ];
    lab.host("a").args.extend(args);
    lab.start_all();
    let listen = http_addr(&lab.host("a").status());
    assert!(listen.starts_with(&format!("{a_addr}:")), "{listen}");
    let url = format!("http://{listen}/api/v1/disks");
    // From the other host, across the lab's network.
    let b = lab.get("b");
    let (code, body) = curl(b, &url, &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = curl(b, &url, &["Authorization: Bearer wrong-token"]);
    assert_eq!(code, 401);
    let (code, body) = curl(
        b,
        &url,
        &["Authorization: Bearer lab-token-0123456789abcdef"],
    );
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed, lab.get("a").client(&["list", "--json"]).json());
    let out = b.exec(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("http://{listen}/metrics"),
    ]);
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");

    // Without a token file, an address other hosts reach is refused at start: exit 2,
    // one line naming the key, and nothing bound.
    let a = lab.get("a");
    for listen in [
        "0.0.0.0:9180".to_string(),
        format!("{a_addr}:9180"),
        "[::]:9180".into(),
    ] {
        let dir = a.dir.join("refused");
        let out = a.try_exec(&[
            // Should it start after all, it is stopped rather than hang the test.
            "timeout",
            "20",
            util::bin().to_str().unwrap(),
            "daemon",
            "--socket",
            dir.join("sock").to_str().unwrap(),
            "--store",
            dir.join("store").to_str().unwrap(),
            "--no-hardware",
            "--http",
            &listen,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("diskd: http.token_file: required"),
            "{stderr}"
        );
        let port_free = a
            .try_exec(&["sh", "-c", "ss -Htln | grep -c ':9180 ' || true"])
            .stdout;
        assert_eq!(String::from_utf8_lossy(&port_free).trim(), "0");
    }
}

#[test]
#[ignore = "needs root"]
fn lab_the_page_shows_the_fleet_in_chromium() {
    util::require_root();
    if !util::have_or_skip(have_chromium(), "chromium (Debian package chromium)") {
        return;
    }
    let mut lab = Lab::new(2, &["--announce-interval", "2s"]);
    lab.host("a").node = "nas".into();
    lab.host("b").node = "laptop".into();
    let a_disks = [
        disk_line("/dev/sdb1", UA, "photos-2024"),
        disk_line(
            "/dev/sdc1",
            "aaaaaaaa-1111-4000-8000-00000000000a",
            "archive",
        ),
        disk_line(
            "/dev/sdd1",
            "aaaaaaaa-2222-4000-8000-00000000000a",
            "old <b>backup</b>",
        ),
    ];
    lab.host("a").set_disks(&a_disks.concat());
    lab.host("b").set_disks(&format!(
        "{}{}",
        disk_line("/dev/nvme0n1p2", UB, "laptop-root"),
        disk_line("/dev/sda1", UC, "usb-stick"),
    ));
    lab.host("b")
        .args
        .extend(["--http".into(), "127.0.0.1:0".into()]);
    lab.start_all();
    wait_for("b to list a's disks", LONG, || {
        lab.get("b")
            .query("archive")
            .first()
            .is_some_and(|d| d["live"] == true)
    });
    // One of a's disks is unplugged: a last known location on both hosts.
    lab.host("a").set_disks(&a_disks[..2].concat());
    lab.host("a").client(&["refresh"]).expect_code(0);
    wait_for("b to see the old backup gone", LONG, || {
        lab.get("b")
            .query("old <b>backup</b>")
            .first()
            .is_some_and(|d| d["live"] == false)
    });
    let b = lab.get("b");
    let listen = http_addr(&b.status());

    // The API in b's namespace answers as b's CLI does, a's disks included.
    // (Peers' `last_seen` moves with every announce: equal when taken within a second.)
    for (path, cli) in [
        ("disks", ["list", "--json"]),
        ("peers", ["peers", "--json"]),
    ] {
        let mut last = (Value::Null, Value::Null);
        wait_for(
            &format!("/api/v1/{path} to equal `{}`", cli.join(" ")),
            LONG,
            || {
                let (code, body) = curl(b, &format!("http://{listen}/api/v1/{path}"), &[]);
                assert_eq!(code, 200, "{body}");
                last = (serde_json::from_str(&body).unwrap(), b.client(&cli).json());
                last.0 == last.1
            },
        );
    }
    let (_, body) = curl(b, &format!("http://{listen}/api/v1/disks"), &[]);
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api.as_array().unwrap().len(), 5, "{api}");

    let chromium = |extra: &[&str], page: &str| {
        let profile = tempfile::tempdir().unwrap();
        let url = format!("http://{listen}/{page}");
        let common = chromium_args(profile.path());
        let mut args = vec!["timeout", "60", "chromium"];
        args.extend(common.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args.push(&url);
        let out = b.try_exec(&args);
        assert!(
            out.status.success(),
            "chromium failed: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // `?live=0`: no event stream, whose open connection would stop Chromium's virtual
    // clock (it waits for pending requests) and so never finish the render.
    let dom = chromium(&["--dump-dom"], "?live=0");
    for want in [
        "photos-2024",
        "archive",
        "laptop-root",
        "usb-stick",
        // The hostile label, as text: escaped in the DOM, never an element.
        "old &lt;b&gt;backup&lt;/b&gt;",
        "<td data-label=\"Node\">nas</td>",
        "<td data-label=\"Host\">nas</td>",
        "<td data-label=\"Host\">laptop</td>",
        "last known",
    ] {
        assert!(dom.contains(want), "the page lacks {want:?}:\n{dom}");
    }
    assert!(
        !dom.contains("<b>backup</b>"),
        "a label became markup:\n{dom}"
    );
    assert!(
        dom.contains("<p class=\"error\" id=\"problem\" hidden=\"\">"),
        "the page shows an error:\n{dom}"
    );

    if std::env::var("DISKD_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web.png");
        std::fs::create_dir_all(png.parent().unwrap()).unwrap();
        let shot = format!("--screenshot={}", png.display());
        chromium(
            &[&shot, "--window-size=1200,800", "--hide-scrollbars"],
            "?live=0",
        );
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
        eprintln!("wrote {}", png.display());
    }
}

/// `/metrics` with a real reading: the daemon reads the fake sysfs's disk `sdq` with a fake
/// smartctl (8 reallocated sectors: `warning`) and a partition of it holds a filesystem.
/// One health series per state for the disk (its partitions do not repeat it), 1 for the
/// current state, and the reading's figures, as Prometheus's own parser reads them.
#[test]
fn metrics_carry_a_disks_smart_reading_once_per_physical_disk() {
    use crate::hardware::SERIAL;
    use crate::health::{ata, sdq_daemon};
    if !util::have_or_skip(
        have_prometheus_parser(),
        "/usr/bin/python3 with prometheus_client (Debian python3-prometheus-client)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (d, _smartctl) = sdq_daemon(dir.path(), &ata(true, 8, 0));
    let d = d.arg("--http").arg("127.0.0.1:0").start();
    util::wait_for("sdq's reading", LONG, || {
        cli_json(&d, &["list", "--json"])
            .1
            .as_array()
            .is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["device"] == "/dev/sdq" && r["health"]["state"] == "warning")
            })
    });
    let addr = http_addr(&d.status_json());
    let resp = get(&addr, "/metrics");
    assert_eq!(resp.status, 200);
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let families = parse_metrics(&text, false);
    let disk = |state: &str| {
        sample(
            &families,
            "diskd_disk_health",
            "diskd_disk_health",
            &[("device", "/dev/sdq"), ("serial", SERIAL), ("state", state)],
        )
    };
    assert_eq!(disk("warning"), 1.0, "{text}");
    for other in ["ok", "failing", "unknown"] {
        assert_eq!(disk(other), 0.0, "{other}: {text}");
    }
    let samples = families["diskd_disk_health"]["samples"].as_array().unwrap();
    assert_eq!(
        samples.len(),
        4,
        "one disk, four states, no partition: {samples:?}"
    );
    let figure = |family: &str| sample(&families, family, family, &[("device", "/dev/sdq")]);
    assert_eq!(figure("diskd_disk_temperature_celsius"), 41.0);
    assert_eq!(figure("diskd_disk_power_on_hours"), 31207.0);
    assert_eq!(figure("diskd_disk_reallocated_sectors"), 8.0);
}
