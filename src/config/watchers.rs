//! The `watchers` section: what each watcher looks at, how often, and for how long.

use super::*;
use crate::flags::{CommandLine, WatchersArgs};

/// The watchers' settings, as the daemon hands them to each watcher.
#[derive(Debug, Clone)]
pub struct Watchers {
    /// The blkid disk watcher.
    pub disks: DiskWatcherConfig,
    /// How often the mount table is read.
    pub mounts_interval: Duration,
    /// The sysfs hardware watcher, when enabled.
    pub hardware: Option<HardwareWatcherConfig>,
    /// The SMART watcher, when enabled (by default: when smartctl is found).
    pub smart: Option<SmartWatcherConfig>,
}

impl Watchers {
    /// Check and resolve the section: the device globs are compiled once and shared by
    /// every watcher that lists devices.
    pub(super) fn from_options(w: WatchersArgs) -> Result<Watchers, ConfigError> {
        let d = w.disks;
        let command = program("watchers.disks.command", d.command, "blkid")?;
        let filter = diskd_watchers::filter::DeviceFilter::new(
            &d.include.unwrap_or_default(),
            &d.exclude.unwrap_or_default(),
        )
        .map_err(|e| err(format!("watchers.disks.{e}")))?;
        let disk_timeout = duration("watchers.disks.timeout", d.timeout, Duration::from_secs(15))?;
        let mount_interval = duration(
            "watchers.mounts.interval",
            w.mounts.interval,
            Duration::from_secs(10),
        )?;
        let h = w.hardware;
        let hardware = if h.enabled.unwrap_or(true) {
            Some(HardwareWatcherConfig {
                root: h.sysfs.unwrap_or_else(|| PathBuf::from("/sys")),
                schedule: Schedule {
                    interval: duration(
                        "watchers.hardware.interval",
                        h.interval,
                        Duration::from_secs(60),
                    )?,
                    // A sysfs read can reach a device: it is held to the disk scans' timeout.
                    timeout: disk_timeout,
                },
                filter: filter.clone(),
            })
        } else {
            None
        };
        let smart = smart_config(w.smart, hardware.as_ref(), &filter)?;
        let disks = DiskWatcherConfig {
            command,
            schedule: Schedule {
                interval: duration(
                    "watchers.disks.interval",
                    d.interval,
                    Duration::from_secs(60),
                )?,
                timeout: disk_timeout,
            },
            filter,
            // Blank-disk records come from the hardware watcher's devices: with it, the
            // disks blkid's scan does not report are probed one by one, so that a device is
            // called blank only when blkid saw it empty.
            probe_sysfs: hardware.as_ref().map(|h| h.root.clone()),
        };
        Ok(Watchers {
            disks,
            mounts_interval: mount_interval,
            hardware,
            smart,
        })
    }
}

/// A watcher's command: key `key`'s argv, `[default]` when not set. It must name a program:
/// an empty one would fail every scan, long after the config was accepted.
fn program(
    key: &str,
    value: Option<CommandLine>,
    default: &str,
) -> Result<Vec<String>, ConfigError> {
    let argv = match value {
        Some(c) => c.into_argv(key)?,
        None => vec![default.to_string()],
    };
    if argv.first().is_none_or(String::is_empty) {
        return Err(err(format!("{key}: must name a program")));
    }
    Ok(argv)
}

/// The SMART watcher's settings. Enabled by default only when smartctl is found (a machine
/// without smartmontools is not told every 30 minutes that it is missing); enabled
/// explicitly (or with a command named), a missing smartctl shows as every disk's
/// `unknown` reason.
fn smart_config(
    s: crate::flags::SmartArgs,
    hardware: Option<&HardwareWatcherConfig>,
    filter: &diskd_watchers::filter::DeviceFilter,
) -> Result<Option<SmartWatcherConfig>, ConfigError> {
    let named = s.command.is_some();
    let command = program("watchers.smart.command", s.command, "smartctl")?;
    let interval = duration(
        "watchers.smart.interval",
        s.interval,
        Duration::from_secs(30 * 60),
    )?;
    let timeout = duration("watchers.smart.timeout", s.timeout, Duration::from_secs(30))?;
    // A smartctl named in the config or on the command line is meant to run: if it is
    // missing, every disk says so.
    let found = program_path(&command[0]);
    let enabled = s.enabled.unwrap_or(named || found.is_some());
    // Run what was found: a user's PATH may lack the sbin directory smartctl lives in.
    let mut command = command;
    if let (false, Some(path)) = (named, found) {
        command[0] = path.display().to_string();
    }
    Ok(enabled.then(|| SmartWatcherConfig {
        command,
        interval,
        timeout,
        sysfs: hardware.map_or_else(|| PathBuf::from("/sys"), |h| h.root.clone()),
        filter: filter.clone(),
    }))
}
