//! `refresh`: run every watcher now and wait for what each found.

use std::time::Duration;

use crate::control::Context;
use crate::protocol::frame::{Reply, Status};

/// Run the watchers and report.
pub async fn apply(ctx: &Context) -> Reply {
    // The slowest watcher is the disk scan; give it its timeout plus slack.
    let deadline = ctx.config.watchers.disks.schedule.timeout + Duration::from_secs(5);
    let reports = ctx.inventory.refresh(None, deadline).await;
    let failed = reports.iter().any(|r| !r.is_ok());
    let lines = reports.iter().map(ToString::to_string).collect();
    Reply {
        status: if failed {
            Status::Error("a watcher failed; the previous inventory is kept".into())
        } else {
            Status::Ok("refreshed".into())
        },
        body: lines,
    }
}
