//! `ping`: ask every peer to re-announce.

use super::Args;
use crate::control::proto::{Reply, Status};

/// `ping`
#[derive(Debug, PartialEq, Eq)]
pub struct Ping;

impl Ping {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Ping, Reply> {
        args.finish()?;
        Ok(Ping)
    }

    /// This build has no peer layer: say so instead of pretending.
    pub fn apply(self) -> Reply {
        Reply::status(Status::Error(
            "ping: this diskd has no peer layer yet; nothing was sent".into(),
        ))
    }
}
