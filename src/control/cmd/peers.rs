//! `peers [--json]`: every peer ever heard, with liveness.

use super::{json_body, Args};
use crate::control::proto::Reply;
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::view;

/// `peers [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct Peers {
    json: bool,
}

impl Peers {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Peers, Reply> {
        let json = args.flag("--json");
        args.finish()?;
        Ok(Peers { json })
    }

    /// Build the reply.
    pub fn apply(self, ctx: &Context) -> Reply {
        let peers = view::peers(ctx.store().peers(), now(), ctx.peer_expiry());
        if self.json {
            return Reply::ok(json_body(&peers));
        }
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|p| {
                vec![
                    p.node.clone(),
                    table::opt(&p.addr),
                    if p.live { "live" } else { "not live" }.into(),
                    p.last_seen.clone(),
                    p.disks.to_string(),
                    p.key.clone().unwrap_or_default(),
                    if p.name_conflict {
                        format!(
                            "name also used by another node id; this one is {}",
                            p.node_id
                        )
                    } else if p.legacy {
                        "legacy".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        let mut body = table::render(
            &["NODE", "ADDR", "STATE", "LAST SEEN", "DISKS", "KEY", "NOTE"],
            &rows,
        );
        if peers.is_empty() {
            body = vec!["no peers heard yet".into()];
        }
        Reply::ok(body)
    }
}
