//! `localhost [--json]`: who this node is.

use serde::Serialize;

use super::{json_body, Args};
use crate::control::proto::Reply;
use crate::control::Context;

/// `localhost [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct Localhost {
    json: bool,
}

#[derive(Serialize)]
struct Out<'a> {
    node: &'a str,
    node_id: &'a str,
    addr: Option<&'a str>,
    addresses: Vec<String>,
}

impl Localhost {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Localhost, Reply> {
        let json = args.flag("--json");
        args.finish()?;
        Ok(Localhost { json })
    }

    /// Build the reply.
    pub fn apply(self, ctx: &Context) -> Reply {
        let node = ctx.node();
        let out = Out {
            node: &node.name,
            node_id: &node.id,
            addr: node.addr.as_deref(),
            addresses: crate::model::addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        if self.json {
            return Reply::ok(json_body(&out));
        }
        Reply::ok(vec![
            format!("node       {}", out.node),
            format!("node id    {}", out.node_id),
            format!("addresses  {}", out.addresses.join(" ")),
        ])
    }
}
