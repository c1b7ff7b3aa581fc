//! `where TERM [--json]`: the last known location of a disk, live records first.

use super::list::render;
use super::QueryError;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::protocol::commands::Query;
use crate::protocol::frame::{Reply, Status};
use crate::view::{self, DiskView};

/// Build the reply.
pub fn apply(cmd: &Query, ctx: &Context) -> Reply {
    match disks(&cmd.term, ctx) {
        Ok(disks) => render(disks, cmd.json, Status::Ok(String::new())),
        Err(e) => e.reply(cmd.json),
    }
}

/// The records of the disks TERM names (UUID, label, device, serial or WWN), live first:
/// the socket's `where` and HTTP's `/api/v1/disks?q=TERM` both answer from this.
pub fn disks(term: &str, ctx: &Context) -> Result<Vec<DiskView>, QueryError> {
    let store = &ctx.store;
    let found = store.find(term)?;
    if found.is_empty() {
        return Err(QueryError::NoMatch(format!("no disk matches {term:?}")));
    }
    Ok(view::disks(store, found, now(), ctx.peer_expiry()))
}
