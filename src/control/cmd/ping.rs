//! `ping`: ask every peer to re-announce (each answers at most one ping per interval).

use std::time::Duration;

use tokio::sync::oneshot;

use super::Args;
use crate::control::proto::{Reply, Status};
use crate::daemon::Context;
use crate::peer::PeerRequest;

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
        ask_peer_layer(ctx, PeerRequest::Ping).await
    }
}

/// Send a request to the peer layer and turn its answer into a reply.
pub async fn ask_peer_layer(
    ctx: &Context,
    make: fn(oneshot::Sender<Result<String, String>>) -> PeerRequest,
) -> Reply {
    let Some(tx) = ctx.peer_requests() else {
        return Reply::status(Status::Error("the peer layer is not running".into()));
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(make(reply)).await.is_err() {
        return Reply::status(Status::Error("the peer layer has stopped".into()));
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(Ok(text))) => Reply::ok_text(text),
        Ok(Ok(Err(e))) => Reply::status(Status::Error(e)),
        Ok(Err(_)) => Reply::status(Status::Error("the peer layer has stopped".into())),
        Err(_) => Reply::status(Status::Error(
            "the peer layer did not answer in time".into(),
        )),
    }
}
