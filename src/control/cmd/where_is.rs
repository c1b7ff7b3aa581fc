//! `where TERM [--json]`: the last known location of a disk, live records first.

use super::list::{no_match, render};
use super::Args;
use crate::control::proto::{Reply, Status};
use crate::control::Context;
use crate::model::now_millis as now;
use crate::view;

/// `where TERM [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct Where {
    /// UUID (any case), label (exact) or device path.
    pub term: String,
    /// Reply in JSON.
    pub json: bool,
}

impl Where {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Where, Reply> {
        let json = args.flag("--json");
        let term = args.required("a UUID, label or device")?;
        args.finish()?;
        Ok(Where { term, json })
    }

    /// Build the reply.
    pub fn apply(self, ctx: &Context) -> Reply {
        let store = ctx.store();
        let found = match store.find(&self.term) {
            Ok(f) => f,
            Err(e) => return super::list::store_failed(e),
        };
        if found.is_empty() {
            return no_match(format!("no disk matches {:?}", self.term), self.json);
        }
        let disks = view::disks(store, found, now(), ctx.peer_expiry());
        render(disks, self.json, Status::Ok(String::new()))
    }
}
