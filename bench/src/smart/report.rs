//! The figures of `diskd-bench smart`: medians over runs, latency percentiles, and the
//! Markdown table BENCHMARKS.md shows.

use std::time::Duration;

use serde_json::{json, Value};

use super::fake::FakeKind;
use super::{Cpu, Loaded, Quiet};

/// Every figure of one configuration (a fake and a delay), over all its runs.
pub(super) struct Figures {
    pub fake: FakeKind,
    pub delay: Duration,
    pub quiet: Vec<Quiet>,
    pub control: Vec<(Cpu, u64)>,
    pub loaded: Vec<Loaded>,
}

/// The middle value (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds, fractional.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99 and max of latency samples, in ms, and their count.
fn latency(samples: impl Iterator<Item = Duration>) -> (usize, f64, f64, f64) {
    let mut v: Vec<Duration> = samples.collect();
    if v.is_empty() {
        return (0, 0.0, 0.0, 0.0);
    }
    v.sort();
    let max = v[v.len() - 1];
    (
        v.len(),
        ms(crate::percentile(&v, 0.5)),
        ms(crate::percentile(&v, 0.99)),
        ms(max),
    )
}

impl Figures {
    fn med(&self, f: impl Fn(&Quiet) -> f64) -> f64 {
        median(self.quiet.iter().map(f).collect())
    }

    pub(super) fn to_json(&self, disks: usize) -> Value {
        let pass = self.med(|q| ms(q.pass));
        let own = self.med(|q| ms(q.cpu.own));
        let children = self.med(|q| ms(q.cpu.children));
        let ctl_own = median(self.control.iter().map(|c| ms(c.0.own)).collect());
        let ctl_children = median(self.control.iter().map(|c| ms(c.0.children)).collect());
        let during = latency(self.loaded.iter().flat_map(|l| l.during.iter().copied()));
        let idle = latency(self.loaded.iter().flat_map(|l| l.idle.iter().copied()));
        let lat = |(n, p50, p99, max): (usize, f64, f64, f64)| json!({"queries": n, "p50_ms": p50, "p99_ms": p99, "max_ms": max});
        json!({
            "fake": self.fake.as_str(),
            "smartctl_delay_ms": ms(self.delay),
            "runs": self.quiet.len(),
            "pass_ms": pass,
            "pass_ms_all": self.quiet.iter().map(|q| q.pass.as_millis() as u64).collect::<Vec<_>>(),
            "pass_ms_per_disk": pass / disks.max(1) as f64,
            "start_to_all_read_ms": self.med(|q| ms(q.seen)),
            "daemon_cpu_ms": own,
            "children_cpu_ms": children,
            "no_smart_daemon_cpu_ms": ctl_own,
            "no_smart_children_cpu_ms": ctl_children,
            "pass_daemon_cpu_ms": own - ctl_own,
            "pass_children_cpu_ms": children - ctl_children,
            "rss_kib": self.med(|q| q.rss_kib as f64),
            "peak_rss_kib": self.med(|q| q.hwm_kib as f64),
            "no_smart_peak_rss_kib": median(self.control.iter().map(|c| c.1 as f64).collect()),
            "verdicts": self.quiet.first().map(|q| json!(q.states)).unwrap_or(Value::Null),
            "pass_ms_while_queried": median(self.loaded.iter().map(|l| ms(l.pass)).collect()),
            "where_during_pass": lat(during),
            "where_idle": lat(idle),
            "where_not_found_before_first_scan": self.loaded.iter().map(|l| l.not_found).sum::<usize>(),
            "refresh_wall_ms": self.med(|q| ms(q.refresh_wall)),
            "refresh_smart_pass_ms": self.med(|q| ms(q.refresh_pass)),
            "refresh_daemon_cpu_ms": self.med(|q| ms(q.refresh_cpu.own)),
            "refresh_children_cpu_ms": self.med(|q| ms(q.refresh_cpu.children)),
        })
    }
}

/// The figures as the Markdown table BENCHMARKS.md shows.
pub(super) fn print_table(r: &Value) {
    let configs = r["configurations"].as_array().cloned().unwrap_or_default();
    println!(
        "{} disks ({} SATA, {} NVMe), {} runs per configuration (medians; latency over all runs)",
        r["disks"], r["sata"], r["nvme"], r["runs"]
    );
    println!();
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for c in &configs {
        header.push_str(&format!(
            " {} fake, {} ms |",
            c["fake"].as_str().unwrap_or("?"),
            c["smartctl_delay_ms"]
        ));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    let f = |v: &Value, d: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    let row = |name: &str, cell: &dyn Fn(&Value) -> String| {
        let cells: Vec<String> = configs.iter().map(cell).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("SMART pass (watcher's `last_duration_ms`)", &|c| {
        format!("{} ms (runs: {})", f(&c["pass_ms"], 0), c["pass_ms_all"])
    });
    row("per disk", &|c| {
        format!("{} ms", f(&c["pass_ms_per_disk"], 2))
    });
    row(
        "start to every disk's reading in `list` (polled every 20 ms)",
        &|c| format!("{} ms", f(&c["start_to_all_read_ms"], 0)),
    );
    row("daemon CPU, start + pass", &|c| {
        format!("{} ms", f(&c["daemon_cpu_ms"], 0))
    });
    row("daemon CPU, start, `--no-smart`", &|c| {
        format!("{} ms", f(&c["no_smart_daemon_cpu_ms"], 0))
    });
    row("**daemon CPU of the pass**", &|c| {
        format!("**{} ms**", f(&c["pass_daemon_cpu_ms"], 0))
    });
    row("children CPU (smartctl; blkid), start + pass", &|c| {
        format!("{} ms", f(&c["children_cpu_ms"], 0))
    });
    row("children CPU, `--no-smart` (blkid)", &|c| {
        format!("{} ms", f(&c["no_smart_children_cpu_ms"], 0))
    });
    row("**children CPU of the pass**", &|c| {
        format!("**{} ms**", f(&c["pass_children_cpu_ms"], 0))
    });
    row("RSS after the pass / peak", &|c| {
        format!(
            "{} / {} MiB",
            f(&json!(c["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0), 1),
            f(
                &json!(c["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0),
                1
            )
        )
    });
    row("peak RSS, `--no-smart`", &|c| {
        format!(
            "{} MiB",
            f(
                &json!(c["no_smart_peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0),
                1
            )
        )
    });
    row("verdicts", &|c| {
        c["verdicts"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    });
    row("SMART pass while queried", &|c| {
        format!("{} ms", f(&c["pass_ms_while_queried"], 0))
    });
    let lat = |v: &Value| {
        format!(
            "{} / {} ms (max {}, n {})",
            f(&v["p50_ms"], 3),
            f(&v["p99_ms"], 3),
            f(&v["max_ms"], 1),
            v["queries"]
        )
    };
    row("`where` p50 / p99 during the pass", &|c| {
        lat(&c["where_during_pass"])
    });
    row("`where` p50 / p99 after it (idle)", &|c| {
        lat(&c["where_idle"])
    });
    row("`refresh` (no disk due): wall / SMART pass", &|c| {
        format!(
            "{} / {} ms",
            f(&c["refresh_wall_ms"], 1),
            f(&c["refresh_smart_pass_ms"], 0)
        )
    });
    row("`refresh`: daemon / children CPU", &|c| {
        format!(
            "{} / {} ms",
            f(&c["refresh_daemon_cpu_ms"], 0),
            f(&c["refresh_children_cpu_ms"], 0)
        )
    });
}
