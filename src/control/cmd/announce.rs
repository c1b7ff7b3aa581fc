//! `announce`: multicast our inventory now.

use super::Args;
use crate::control::proto::{Reply, Status};

/// `announce`
#[derive(Debug, PartialEq, Eq)]
pub struct Announce;

impl Announce {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Announce, Reply> {
        args.finish()?;
        Ok(Announce)
    }

    /// This build has no peer layer: say so instead of pretending.
    pub fn apply(self) -> Reply {
        Reply::status(Status::Error(
            "announce: this diskd has no peer layer yet; nothing was sent".into(),
        ))
    }
}
