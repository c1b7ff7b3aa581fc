//! `refresh`: run every watcher now and wait for what each found.

use std::time::Duration;

use super::Args;
use crate::control::proto::{Reply, Status};
use crate::control::Context;

/// `refresh`
#[derive(Debug, PartialEq, Eq)]
pub struct Refresh;

impl Refresh {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Refresh, Reply> {
        args.finish()?;
        Ok(Refresh)
    }

    /// Run the watchers and report.
    pub async fn apply(self, ctx: &Context) -> Reply {
        // The slowest watcher is the disk scan; give it its timeout plus slack.
        let deadline = ctx.config().disks.timeout + Duration::from_secs(5);
        let reports = ctx.inventory().refresh(None, deadline).await;
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
}
