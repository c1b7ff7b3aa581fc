//! What each control command does: one file per command, applying its definition (the
//! types of `protocol::commands`, which also parse it) to the daemon's handles and
//! rendering text or JSON. Unknown commands and stray arguments are usage errors from the
//! parser and the session goes on.
//!
//! The read-only commands split their work in two: a query function returning the rows
//! (`list::disks`, `where_is::disks`, `history::stays`, `peers::peers`, `status::report`,
//! `events::line`) and the socket reply rendered from them. The HTTP server calls the same
//! query functions, so a query answers the same whichever door it came in by.

mod announce;
pub mod debug;
pub mod df;
pub mod events;
pub mod health;
pub mod help;
pub mod history;
pub mod list;
mod localhost;
mod mount;
pub mod peers;
mod ping;
mod refresh;
pub mod status;
pub mod wait;
pub mod where_is;

use crate::control::{table, Context};
use crate::protocol::frame::{Reply, Status};
use crate::protocol::Request;

/// Why a query has no rows to show: typed, so each door renders it its own way (the
/// socket as `-NOMATCH` or `-ERR`, HTTP as 404 or 500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Nothing matched; the message says what was asked for.
    #[error("{0}")]
    NoMatch(String),
    /// The store could not be read: an error, never a partial answer that looks complete.
    #[error("cannot read the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl QueryError {
    /// The socket reply: `-NOMATCH` (with `[]` as the body in JSON mode, so scripts can
    /// parse it) or `-ERR`.
    pub fn reply(self, json: bool) -> Reply {
        match self {
            QueryError::NoMatch(msg) => list::no_match(msg, json),
            e @ QueryError::Store(_) => Reply::status(Status::Error(e.to_string())),
        }
    }
}

/// Carry out a request that produces one reply at once. `debug` and `events` stream and
/// `wait` blocks while it watches the client's stream, so the session runs those (they need
/// its connection).
pub async fn apply(request: &Request, ctx: &Context) -> Reply {
    match request {
        Request::Query(c) => where_is::apply(c, ctx),
        Request::List(c) => list::apply(c, ctx),
        Request::History(c) => history::apply(c, ctx),
        Request::Health(c) => health::apply(c, ctx),
        Request::Df(c) => df::apply(c, ctx),
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

/// A column of a listing: its header and how a row's cell reads, side by side so that a
/// column is added, moved or dropped in one place.
pub type Column<T> = (&'static str, fn(&T) -> String);

/// The body of a listing: `rows` as one line of JSON, or else as a table of `columns`.
pub fn rows_body<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    columns: &[Column<T>],
) -> Vec<String> {
    if json {
        json_body(&rows)
    } else {
        let header: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| columns.iter().map(|(_, cell)| cell(row)).collect())
            .collect();
        table::render(&header, &cells)
    }
}
