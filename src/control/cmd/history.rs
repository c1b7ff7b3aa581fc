//! `history TERM [--json]`: where a disk has been, one row per stay, newest first.

use super::json_body;
use super::list::{no_match, store_failed};
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::protocol::commands::History;
use crate::protocol::frame::{Reply, Status};
use crate::view;

/// Build the reply.
pub fn apply(cmd: &History, ctx: &Context) -> Reply {
    let store = ctx.store();
    let found = match store.history(&cmd.term) {
        Ok(f) => f,
        Err(e) => return store_failed(e),
    };
    if found.is_empty() {
        return no_match(format!("no disk matches {:?}", cmd.term), cmd.json);
    }
    let stays = view::stays(store, found, now(), ctx.peer_expiry());
    let body = if cmd.json {
        json_body(&stays)
    } else {
        let rows: Vec<Vec<String>> = stays
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    table::opt(&s.addr),
                    s.device.clone(),
                    table::opt(&s.label),
                    s.first_seen.clone(),
                    s.last_seen.clone(),
                    match (s.live, s.current) {
                        (true, _) => "live",
                        (false, true) => "last-known",
                        (false, false) => "ended",
                    }
                    .to_string(),
                ]
            })
            .collect();
        table::render(
            &[
                "HOST",
                "ADDR",
                "DEVICE",
                "LABEL",
                "FIRST SEEN",
                "LAST SEEN",
                "STATE",
            ],
            &rows,
        )
    };
    Reply {
        status: Status::Ok(String::new()),
        body,
    }
}
