//! `peers [--json]`: every peer ever heard, with liveness.

use super::{rows_body, Column};
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::protocol::commands::Json;
use crate::protocol::frame::Reply;
use crate::view::{self, PeerView};

/// Every peer ever heard, live first, then by name: the socket's `peers` and HTTP's
/// `/api/v1/peers` (and the peer gauges of `/metrics`) all answer from this.
pub fn peers(ctx: &Context) -> Vec<PeerView> {
    let status = ctx.peers.status();
    view::peers(ctx.store.peers(), now(), ctx.peer_expiry(), |id| {
        status.via(id)
    })
}

/// Build the reply.
pub fn apply(cmd: &Json, ctx: &Context) -> Reply {
    let peers = peers(ctx);
    if peers.is_empty() && !cmd.json {
        return Reply::ok(vec!["no peers heard yet".into()]);
    }
    let columns: [Column<PeerView>; 8] = [
        ("NODE", |p| p.node.clone()),
        ("ADDR", |p| table::opt(&p.addr)),
        ("STATE", |p| if p.live { "live" } else { "not live" }.into()),
        ("LAST SEEN", |p| p.last_seen.clone()),
        ("DISKS", |p| p.disks.to_string()),
        ("VIA", |p| p.via.clone()),
        ("KEY", |p| table::opt(&p.key)),
        ("NOTE", |p| {
            if p.name_conflict {
                format!(
                    "name also used by another node id; this one is {}",
                    p.node_id
                )
            } else {
                String::new()
            }
        }),
    ];
    Reply::ok(rows_body(&peers, cmd.json, &columns))
}
