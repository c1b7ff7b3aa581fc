//! `where TERM [--json]`: the last known location of a disk, live records first.

use super::list::{no_match, render};
use crate::control::Context;
use crate::model::now_millis as now;
use crate::protocol::commands::Query;
use crate::protocol::frame::{Reply, Status};
use crate::view;

/// Build the reply.
pub fn apply(cmd: &Query, ctx: &Context) -> Reply {
    let store = ctx.store();
    let found = match store.find(&cmd.term) {
        Ok(f) => f,
        Err(e) => return super::list::store_failed(e),
    };
    if found.is_empty() {
        return no_match(format!("no disk matches {:?}", cmd.term), cmd.json);
    }
    let disks = view::disks(store, found, now(), ctx.peer_expiry());
    render(disks, cmd.json, Status::Ok(String::new()))
}
