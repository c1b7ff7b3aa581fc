//! `ping`: ask every peer to re-announce (each answers at most one ping per interval).

use std::time::Duration;

use super::Args;
use crate::control::proto::{Reply, Status};
use crate::control::Context;
use crate::peer::{PeerError, PeerRequest};

/// `ping`
#[derive(Debug, PartialEq, Eq)]
pub struct Ping;

impl Ping {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Ping, Reply> {
        args.finish()?;
        Ok(Ping)
    }

    /// Ask the peer layer to send a ping.
    pub async fn apply(self, ctx: &Context) -> Reply {
        peer_reply(
            ctx.peers().request(PeerRequest::Ping, PEER_DEADLINE).await,
            |()| "ping sent; peers answer within a second".to_string(),
        )
    }
}

/// How long a command waits for the peer layer.
pub const PEER_DEADLINE: Duration = Duration::from_secs(10);

/// The peer layer's answer as a reply.
pub fn peer_reply<T>(r: Result<T, PeerError>, ok: impl FnOnce(T) -> String) -> Reply {
    match r {
        Ok(v) => Reply::ok_text(ok(v)),
        Err(e) => Reply::status(Status::Error(e.to_string())),
    }
}
