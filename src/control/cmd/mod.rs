//! What each control command does: one file per command, applying its definition (the
//! types of `protocol::commands`, which also parse it) to the daemon's handles and
//! rendering text or JSON. Unknown commands and stray arguments are usage errors from the
//! parser and the session goes on.

mod announce;
pub mod debug;
pub mod help;
mod history;
mod list;
mod localhost;
mod mount;
mod peers;
mod ping;
mod refresh;
mod status;
mod where_is;

use crate::control::Context;
use crate::protocol::frame::{Reply, Status};
use crate::protocol::Request;

/// Carry out a request that produces one reply (`debug` streams, so the session runs it).
pub async fn apply(request: &Request, ctx: &Context) -> Reply {
    match request {
        Request::Query(c) => off_runtime(ctx, c, where_is::apply).await,
        Request::List(c) => off_runtime(ctx, c, list::apply).await,
        Request::History(c) => off_runtime(ctx, c, history::apply).await,
        Request::Peers(c) => off_runtime(ctx, c, peers::apply).await,
        Request::Status(c) => off_runtime(ctx, c, status::apply).await,
        Request::Localhost(c) => localhost::apply(c, ctx),
        Request::Refresh => refresh::apply(ctx).await,
        Request::Announce => announce::apply(ctx).await,
        Request::Ping => ping::apply(ctx).await,
        Request::Mount(c) => mount::mount(c, ctx).await,
        Request::Umount(c) => mount::umount(c, ctx).await,
        Request::Debug => Reply::status(Status::Error(
            "debug streams; not a one-reply command".into(),
        )),
    }
}

/// Run a command that reads the store on a blocking thread: a store read may wait while
/// our own inventory is being flushed (it is durable before it is visible), and that wait
/// must never hold one of the runtime's worker threads.
async fn off_runtime<A: Clone + Send + 'static>(
    ctx: &Context,
    args: &A,
    f: fn(&A, &Context) -> Reply,
) -> Reply {
    let (ctx, args) = (ctx.clone(), args.clone());
    tokio::task::spawn_blocking(move || f(&args, &ctx))
        .await
        .unwrap_or_else(|e| Reply::status(Status::Error(format!("the command failed: {e}"))))
}

/// Render a serialisable value as a one-line JSON reply body.
pub fn json_body<T: serde::Serialize>(v: &T) -> Vec<String> {
    match serde_json::to_string(v) {
        Ok(s) => vec![s],
        // Our own view types always serialise; keep the session alive regardless.
        Err(e) => vec![format!("{{\"error\": {:?}}}", e.to_string())],
    }
}
