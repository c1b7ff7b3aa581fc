//! `diskd-bench sim`'s options: the fleet, the network, and the faults, each parsed with a
//! message that says what was expected.

use std::str::FromStr;
use std::time::Duration;

/// Options of `diskd-bench sim` (times are virtual).
#[derive(Debug, Clone, clap::Args)]
pub struct SimOptions {
    /// Nodes in the fleet (all in this process, on one thread).
    #[arg(long, default_value_t = 200)]
    pub nodes: usize,
    /// Disks per node.
    #[arg(long, default_value_t = 16)]
    pub disks: usize,
    /// Seed of everything random: node ids, seeds lists, foca, jitter, latency, loss,
    /// which nodes fail. One seed and the same options give the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Nodes are started evenly over this span (node 0 first).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub start_over: Duration,
    /// Length of the run, from the first start.
    #[arg(long, default_value = "150s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Inventory changes to time, each on a random live node, three seconds apart, after
    /// the steady-state window.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Length of the steady-state window (bytes per node).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub steady: Duration,
    /// The steady-state window starts this long after the last start (and not before
    /// convergence): a fleet that starts at once spreads every join to every member first
    /// (6 log10 N sends each), which takes a while and is not the steady state.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Latency of each datagram, drawn evenly from MIN..MAX.
    #[arg(long, default_value = "0.2ms..2ms")]
    pub latency: Latency,
    /// Datagrams lost at random, in percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Cut FRACTION of the nodes off from the rest at START for DURATION, then heal:
    /// `0.3@60s+60s`.
    #[arg(long)]
    pub partition: Option<Partition>,
    /// Crash FRACTION of the nodes at once at TIME (no goodbye): `0.1@90s`. Their disks
    /// must stay known everywhere, as last known.
    #[arg(long)]
    pub kill: Option<Kill>,
    /// Start N more nodes at TIME: `10@60s`.
    #[arg(long)]
    pub join_late: Option<JoinLate>,
    /// Crash FRACTION of the nodes at TIME and start them again from their own store
    /// DOWN later: `0.05@60s+10s`.
    #[arg(long)]
    pub restart: Option<Restart>,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

impl SimOptions {
    /// The defaults, at another size (tests).
    #[cfg(test)]
    pub fn sized(nodes: usize, disks: usize) -> SimOptions {
        SimOptions {
            nodes,
            disks,
            seed: 1,
            start_over: Duration::from_secs(10),
            duration: Duration::from_secs(150),
            changes: 10,
            steady: Duration::from_secs(30),
            settle: Duration::from_secs(60),
            latency: Latency {
                min: Duration::from_micros(200),
                max: Duration::from_millis(2),
            },
            loss: 0.0,
            partition: None,
            kill: None,
            join_late: None,
            restart: None,
            json: false,
        }
    }

    /// A clear error for options that cannot make a run.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes < 2 {
            return Err("--nodes: at least 2".into());
        }
        if self.disks == 0 || self.disks > 4096 {
            return Err("--disks: 1 to 4096".into());
        }
        if !(0.0..100.0).contains(&self.loss) {
            return Err("--loss: a percentage from 0 up to (not including) 100".into());
        }
        if self.duration <= self.start_over {
            return Err("--duration must be longer than --start-over".into());
        }
        Ok(())
    }
}

fn duration(s: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{what} {s:?}: {e}"))
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "fraction {s:?}: a number between 0 and 1, such as 0.3"
        )),
    }
}

/// `MIN..MAX`.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl FromStr for Latency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("latency {s:?}: MIN..MAX, such as 0.2ms..2ms"))?;
        let (min, max) = (duration(a, "latency")?, duration(b, "latency")?);
        if min > max {
            return Err(format!("latency {s:?}: MIN is larger than MAX"));
        }
        Ok(Latency { min, max })
    }
}

/// `FRACTION@START+DURATION`.
#[derive(Debug, Clone, Copy)]
pub struct Partition {
    /// Share of the nodes cut off.
    pub fraction: f64,
    /// When the cut starts.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
}

impl FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("partition {s:?}: FRACTION@START+DURATION, such as 0.3@60s+60s");
        let (f, rest) = s.split_once('@').ok_or_else(bad)?;
        let (start, length) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Partition {
            fraction: fraction(f)?,
            start: duration(start, "start")?,
            length: duration(length, "duration")?,
        })
    }
}

/// `FRACTION@TIME`.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    /// Share of the nodes crashed.
    pub fraction: f64,
    /// When.
    pub at: Duration,
}

impl FromStr for Kill {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (f, at) = s
            .split_once('@')
            .ok_or_else(|| format!("kill {s:?}: FRACTION@TIME, such as 0.1@90s"))?;
        Ok(Kill {
            fraction: fraction(f)?,
            at: duration(at, "time")?,
        })
    }
}

/// `N@TIME`.
#[derive(Debug, Clone, Copy)]
pub struct JoinLate {
    /// How many nodes join.
    pub count: usize,
    /// When.
    pub at: Duration,
}

impl FromStr for JoinLate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("join-late {s:?}: N@TIME, such as 10@60s");
        let (n, at) = s.split_once('@').ok_or_else(bad)?;
        let count = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        Ok(JoinLate {
            count,
            at: duration(at, "time")?,
        })
    }
}

/// `FRACTION@TIME+DOWN`.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// Share of the nodes restarted.
    pub fraction: f64,
    /// When they crash.
    pub at: Duration,
    /// How long they stay down.
    pub down: Duration,
}

impl FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("restart {s:?}: FRACTION@TIME+DOWN, such as 0.05@60s+10s");
        let (f, rest) = s.split_once('@').ok_or_else(bad)?;
        let (at, down) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Restart {
            fraction: fraction(f)?,
            at: duration(at, "time")?,
            down: duration(down, "down time")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_options_parse_and_bad_ones_say_what_was_expected() {
        let p: Partition = "0.3@60s+1m".parse().unwrap();
        assert_eq!(
            (p.fraction, p.start, p.length),
            (0.3, Duration::from_secs(60), Duration::from_secs(60))
        );
        let l: Latency = "0.2ms..2ms".parse().unwrap();
        assert_eq!(
            (l.min, l.max),
            (Duration::from_micros(200), Duration::from_millis(2))
        );
        let j: JoinLate = "10@60s".parse().unwrap();
        assert_eq!((j.count, j.at), (10, Duration::from_secs(60)));
        let r: Restart = "0.05@60s+10s".parse().unwrap();
        assert_eq!(r.down, Duration::from_secs(10));
        assert!("1.5@60s"
            .parse::<Kill>()
            .unwrap_err()
            .contains("between 0 and 1"));
        assert!("0.3@60s"
            .parse::<Partition>()
            .unwrap_err()
            .contains("FRACTION@START+DURATION"));
        assert!("2ms..1ms"
            .parse::<Latency>()
            .unwrap_err()
            .contains("larger"));
        assert!("x@1s".parse::<JoinLate>().unwrap_err().contains("N@TIME"));
    }
}
