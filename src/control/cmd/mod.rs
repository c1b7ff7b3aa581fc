//! What each control command does: one file per command, applying its definition (the
//! types of `protocol::commands`, which also parse it) to the daemon's handles and
//! rendering text or JSON. Unknown commands and stray arguments are usage errors from the
//! parser and the session goes on.

mod announce;
pub mod debug;
pub mod events;
pub mod help;
mod history;
mod list;
mod localhost;
mod mount;
mod peers;
mod ping;
mod refresh;
mod status;
pub mod wait;
mod where_is;

use crate::control::Context;
use crate::protocol::frame::{Reply, Status};
use crate::protocol::Request;

/// Carry out a request that produces one reply at once. `debug` and `events` stream and
/// `wait` blocks while it watches the client's stream, so the session runs those (they need
/// its connection).
pub async fn apply(request: &Request, ctx: &Context) -> Reply {
    match request {
        Request::Query(c) => where_is::apply(c, ctx),
        Request::List(c) => list::apply(c, ctx),
        Request::History(c) => history::apply(c, ctx),
        Request::Peers(c) => peers::apply(c, ctx),
        Request::Status(c) => off_runtime(ctx, c, status::apply).await,
        Request::Localhost(c) => localhost::apply(c, ctx),
        Request::Refresh => refresh::apply(ctx).await,
        Request::Announce => announce::apply(ctx).await,
        Request::Ping => ping::apply(ctx).await,
        Request::Mount(c) => mount::mount(c, ctx).await,
        Request::Umount(c) => mount::umount(c, ctx).await,
        Request::Debug | Request::Events(_) | Request::Wait(_) => {
            Reply::status(Status::Error(format!(
                "{} runs on the session; not a one-reply command",
                request.name()
            )))
        }
    }
}

/// Run a command that does file I/O on a blocking thread (`status` measures the store on
/// disk), so it never holds one of the runtime's worker threads. Queries answer from the
/// store's memory and run in place.
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
