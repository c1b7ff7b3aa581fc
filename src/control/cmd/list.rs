//! `list [host] [--json]`: every disk known, live ones first.

use super::{json_body, Args};
use crate::control::proto::{Reply, Status};
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::view::{self, DiskView};

/// `list [host] [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct List {
    /// Only this node's disks.
    pub host: Option<String>,
    /// Reply in JSON.
    pub json: bool,
}

impl List {
    /// Parse the arguments (`--host NODE` is accepted as well as a bare NODE).
    pub fn parse(args: &mut Args) -> Result<List, Reply> {
        let json = args.flag("--json");
        let mut host = args.positional();
        if host.as_deref() == Some("--host") {
            host = Some(args.required("a node name after --host")?);
        }
        args.finish()?;
        Ok(List { host, json })
    }

    /// Build the reply.
    pub fn apply(self, ctx: &Context) -> Reply {
        let store = ctx.store();
        let sightings = match match &self.host {
            Some(h) => store.find_host(h),
            None => store.sightings(),
        } {
            Ok(s) => s,
            Err(e) => return store_failed(e),
        };
        if let Some(h) = &self.host {
            if sightings.is_empty() {
                return no_match(format!("no disks known on host {h:?}"), self.json);
            }
        }
        let disks = view::disks(store, sightings, now(), ctx.peer_expiry());
        render(disks, self.json, Status::Ok(String::new()))
    }
}

/// A no-match reply; in JSON mode its body is an empty array so scripts can parse it.
pub fn no_match(msg: String, json: bool) -> Reply {
    Reply {
        status: Status::NoMatch(msg),
        body: if json { vec!["[]".into()] } else { Vec::new() },
    }
}

/// A store read that failed: an error, never a partial list that looks complete.
pub fn store_failed(e: crate::store::StoreError) -> Reply {
    Reply::status(Status::Error(format!("cannot read the store: {e}")))
}

/// Render disks as a table or JSON.
pub fn render(disks: Vec<DiskView>, json: bool, status: Status) -> Reply {
    let body = if json {
        json_body(&disks)
    } else {
        let rows: Vec<Vec<String>> = disks
            .iter()
            .map(|d| {
                vec![
                    d.host.clone(),
                    table::opt(&d.addr),
                    table::opt(&d.uuid),
                    table::opt(&d.label),
                    d.device.clone(),
                    table::opt(&d.fstype),
                    d.mountpoints.join(","),
                    if d.live { "live" } else { "last-known" }.to_string(),
                    d.last_seen.clone(),
                ]
            })
            .collect();
        table::render(
            &[
                "HOST",
                "ADDR",
                "UUID",
                "LABEL",
                "DEVICE",
                "FSTYPE",
                "MOUNTPOINTS",
                "STATE",
                "LAST SEEN",
            ],
            &rows,
        )
    };
    Reply { status, body }
}
