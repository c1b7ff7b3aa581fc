//! The one-shot client and the REPL's script mode against a real daemon.

mod util;

use util::TestDaemon;

const TWO_DISKS: &str =
    "/dev/sdb1: UUID=\"6fe176fb-83a0-4e4a-af6a-f578ca7a1f65\" LABEL=\"backup\" TYPE=\"ext4\"\n\
/dev/sdc1: UUID=\"ABCD-1234\" LABEL=\"my photos\" TYPE=\"vfat\"\n";

#[test]
fn query_list_and_exit_codes() {
    let d = TestDaemon::new(TWO_DISKS).start();
    d.wait_query("backup");
    let r = d.client(&["query", "6FE176FB-83A0-4E4A-AF6A-F578CA7A1F65", "--json"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v[0]["host"], "test-node");
    assert_eq!(v[0]["label"], "backup");
    assert_eq!(v[0]["device"], "/dev/sdb1");
    assert_eq!(v[0]["fstype"], "ext4");
    assert_eq!(v[0]["live"], true);
    assert!(v[0]["mountpoints"].is_array());
    assert!(v[0]["last_seen"].as_str().unwrap().ends_with('Z'));

    let r = d.client(&["query", "my photos"]);
    r.expect_code(0);
    assert!(r.stdout().contains("ABCD-1234"), "{}", r.stdout());

    let r = d.client(&["query", "nothing-like-this", "--json"]);
    r.expect_code(1);
    assert_eq!(r.json(), serde_json::json!([]));

    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    d.client(&["list", "--host", "elsewhere"]).expect_code(1);
    let r = d.client(&["announce"]);
    r.expect_code(0);
    assert!(r.stdout().contains("announced 2 disks"), "{}", r.stdout());
}

#[test]
fn unreachable_daemon_is_exit_3_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nothing-here");
    let r = util::run_diskd(&["--socket", sock.to_str().unwrap(), "status"], None);
    r.expect_code(3);
    assert!(r.stderr().contains("diskd daemon"), "{}", r.stderr());
}
