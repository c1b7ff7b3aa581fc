//! `ping`: ask every peer to re-announce (each answers at most one ping per interval).

use std::time::Duration;

use crate::control::Context;
use crate::peer::{PeerError, PeerRequest};
use crate::protocol::frame::{Reply, Status};

/// Ask the peer layer to send a ping.
pub async fn apply(ctx: &Context) -> Reply {
    peer_reply(
        ctx.peers.request(PeerRequest::Ping, PEER_DEADLINE).await,
        |()| "ping sent; peers answer within a second".to_string(),
    )
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
