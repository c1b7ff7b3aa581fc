//! The fake smartctl of `diskd-bench smart`, compiled: std only, no allocator-heavy
//! start-up, so that what a SMART pass costs the daemon is not hidden under the start-up of
//! a shell and a `cat` per disk (the shell fake is measured beside it).
//!
//! Usage, as the daemon runs it (`--smartctl "diskd-bench-smartctl DIR DELAY_US"`, the
//! watcher appends its options and the device last):
//!
//! ```text
//! diskd-bench-smartctl DIR DELAY_US --json -a -n standby /dev/NAME
//! ```
//!
//! Waits `DELAY_US` microseconds (the drive's answer time it stands in for), prints
//! `DIR/NAME.json` and exits with the number in `DIR/NAME.rc` (smartctl's status bits; 0
//! without one). A device without a file is what smartctl says of a missing device:
//! "No such device" on stderr, exit 2.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(delay), Some(device)) = (args.first(), args.get(1), args.last()) else {
        eprintln!("usage: diskd-bench-smartctl DIR DELAY_US [SMARTCTL OPTIONS...] DEVICE");
        return ExitCode::from(1);
    };
    let Ok(delay_us) = delay.parse::<u64>() else {
        eprintln!("diskd-bench-smartctl: DELAY_US is not a number: {delay:?}");
        return ExitCode::from(1);
    };
    let name = Path::new(device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new(dir);
    let Ok(json) = std::fs::read(dir.join(format!("{name}.json"))) else {
        eprintln!("Smartctl open device: {device} failed: No such device");
        return ExitCode::from(2);
    };
    let rc = std::fs::read_to_string(dir.join(format!("{name}.rc")))
        .ok()
        .and_then(|t| t.trim().parse::<u8>().ok())
        .unwrap_or(0);
    if delay_us > 0 {
        std::thread::sleep(Duration::from_micros(delay_us));
    }
    // A daemon that stopped reading is not this program's problem: exit with the status.
    let _ = std::io::stdout().lock().write_all(&json);
    ExitCode::from(rc)
}
