//! `announce`: multicast our inventory now.

use crate::control::Context;
use crate::peer::PeerRequest;
use crate::protocol::frame::Reply;

/// Ask the peer layer to announce and wait for it.
pub async fn apply(ctx: &Context) -> Reply {
    use super::ping::{peer_reply, PEER_DEADLINE};
    peer_reply(
        ctx.peers
            .request(PeerRequest::Announce, PEER_DEADLINE)
            .await,
        |n| format!("announced {n} disks"),
    )
}
