//! `localhost [--json]`: who this node is.

use serde::Serialize;

use super::json_body;
use crate::control::Context;
use crate::protocol::commands::Json;
use crate::protocol::frame::Reply;

#[derive(Serialize)]
struct Out<'a> {
    node: &'a str,
    node_id: &'a str,
    addr: Option<&'a str>,
    addresses: Vec<String>,
}

/// Build the reply.
pub fn apply(cmd: &Json, ctx: &Context) -> Reply {
    let node = &ctx.node;
    let out = Out {
        node: &node.name,
        node_id: &node.id,
        addr: node.addr.as_deref(),
        addresses: crate::model::addresses()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    if cmd.json {
        return Reply::ok(json_body(&out));
    }
    Reply::ok(vec![
        format!("node       {}", out.node),
        format!("node id    {}", out.node_id),
        format!("addresses  {}", out.addresses.join(" ")),
    ])
}
