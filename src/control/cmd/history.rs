//! `history TERM [--json]`: where a disk has been, one row per stay, newest first; in JSON
//! each stay also carries the SMART readings taken during it (the disk's last 64 in all).

use super::{rows_body, Column, QueryError};
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::protocol::commands::History;
use crate::protocol::frame::{Reply, Status};
use crate::view::{self, StayView};

/// Every stay of the disks TERM names, newest first: the socket's `history` and HTTP's
/// `/api/v1/disks/TERM/history` both answer from this.
pub fn stays(term: &str, ctx: &Context) -> Result<Vec<StayView>, QueryError> {
    let store = &ctx.store;
    let found = store.history(term)?;
    if found.is_empty() {
        return Err(QueryError::NoMatch(format!("no disk matches {term:?}")));
    }
    // The readings are one disk's: when TERM names several (a label two disks share), which
    // stay a reading belongs to cannot be told, so none is shown rather than a wrong one.
    let disks: std::collections::HashSet<String> = store
        .find(term)?
        .iter()
        .map(|s| s.disk.identity())
        .collect();
    let readings = if disks.len() <= 1 {
        store.health_log(term)?
    } else {
        Vec::new()
    };
    Ok(view::stays(
        store,
        found,
        readings,
        now(),
        ctx.peer_expiry(),
    ))
}

/// Build the reply.
pub fn apply(cmd: &History, ctx: &Context) -> Reply {
    let stays = match stays(&cmd.term, ctx) {
        Ok(s) => s,
        Err(e) => return e.reply(cmd.json),
    };
    let columns: [Column<StayView>; 7] = [
        ("HOST", |v| v.stay.host.clone()),
        ("ADDR", |v| table::opt(&v.stay.addr)),
        ("DEVICE", |v| v.stay.device.clone()),
        ("LABEL", |v| table::opt(&v.stay.label)),
        ("FIRST SEEN", |v| v.stay.first_seen.clone()),
        ("LAST SEEN", |v| v.stay.last_seen.clone()),
        ("STATE", |v| {
            match (v.live, v.stay.current) {
                (true, _) => "live",
                (false, true) => "last-known",
                (false, false) => "ended",
            }
            .to_string()
        }),
    ];
    let body = rows_body(&stays, cmd.json, &columns);
    Reply {
        status: Status::Ok(String::new()),
        body,
    }
}
