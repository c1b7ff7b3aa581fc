//! `announce`: multicast our inventory now.

use super::Args;
use crate::control::proto::Reply;
use crate::control::Context;
use crate::peer::PeerRequest;

/// `announce`
#[derive(Debug, PartialEq, Eq)]
pub struct Announce;

impl Announce {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Announce, Reply> {
        args.finish()?;
        Ok(Announce)
    }

    /// Ask the peer layer to announce and wait for it.
    pub async fn apply(self, ctx: &Context) -> Reply {
        use super::ping::{peer_reply, PEER_DEADLINE};
        peer_reply(
            ctx.peers()
                .request(PeerRequest::Announce, PEER_DEADLINE)
                .await,
            |n| format!("announced {n} disks"),
        )
    }
}
