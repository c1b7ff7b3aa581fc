//! Accepts control sessions and runs each in its own task.
//!
//! The accept loop decides, before a session starts, whether it may (see
//! [`super::sessions`]): past the caller's share of the table, or when the table is full
//! for it, the client gets one error line, written without waiting, and is closed at once.
//! So stalled clients can never make the daemon queue, a refused connection costs nothing
//! after its line, and no local user can keep root from `status`.
//! Accept errors (for example EMFILE) back off with a cap and reset on success.

use std::io::Write;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::access;
use super::cmd;
use super::connection::{Connection, Line};
use super::sessions::{Refusal, SessionTable};
use super::Context;
use crate::model::Backoff;
use crate::protocol::frame::{tokenize, Reply, Status, MAX_LINE};
use crate::protocol::{Request, SessionCommand};
use crate::telemetry::Stats;

pub use super::sessions::{MAX_SESSIONS, RESERVED_SESSIONS};

/// Serve the listener until shutdown.
pub async fn serve(ctx: Context, listener: UnixListener, tracker: TaskTracker) {
    let table = SessionTable::new(ctx.config.control.max_sessions_per_user);
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut session_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!("accept failed: {e}; retrying in {wait:?}");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let caller = access::Caller::of(&stream, &ctx.access);
        let slot = match table.admit(&caller) {
            Ok(slot) => slot,
            Err(refusal) => {
                ctx.stats().refused(refusal.reason());
                tracing::debug!(uid = ?caller.uid(), "session refused: {}", refusal.message());
                refuse(stream, &refusal);
                continue;
            }
        };
        session_id += 1;
        let span = tracing::debug_span!("session", id = session_id, uid = ?caller.uid());
        let ctx = ctx.clone();
        tracker.spawn(
            async move {
                Stats::bump(&ctx.stats().sessions_total);
                Stats::bump(&ctx.stats().sessions_open);
                if let Err(e) = session(&ctx, stream, caller).await {
                    tracing::debug!("session ended: {e}");
                }
                Stats::drop_one(&ctx.stats().sessions_open);
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Tell a refused client why, in one line, and close. The write does not wait: a fresh
/// socket's buffer takes a line, and a client that cannot take it loses only the line.
/// Nothing outlives this call, so a flood of refused connections costs nothing after it.
fn refuse(stream: UnixStream, refusal: &Refusal) {
    let reply = Reply::status(Status::Error(refusal.message()));
    match stream.into_std() {
        Ok(mut s) => {
            let _ = s.write(reply.encode().as_bytes());
        }
        Err(e) => tracing::debug!("refused session: {e}"),
    }
}

/// The greeting every session starts with (the Perl diskd's words, then ours).
pub fn greeting(ctx: &Context) -> Reply {
    Reply {
        status: Status::Ok(format!(
            "diskd local interface awaiting commands (diskd {}, node {})",
            env!("CARGO_PKG_VERSION"),
            ctx.node.name
        )),
        body: vec![
            "Type 'help' for the commands. Each reply is a status line (+OK or -ERR ...),".into(),
            "body lines, and a line with a single '.'.".into(),
        ],
    }
}

async fn session(ctx: &Context, stream: UnixStream, caller: access::Caller) -> std::io::Result<()> {
    let mut conn = Connection::new(stream);
    conn.write_reply(&greeting(ctx)).await?;
    loop {
        let line = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                let _ = conn.write_reply(&Reply::status(Status::Error("daemon shutting down".into()))).await;
                return Ok(());
            }
            l = conn.read_line() => l?,
        };
        let text = match line {
            None => return Ok(()),
            Some(Line::Text(t)) => t,
            Some(Line::TooLong) => {
                Stats::bump(&ctx.stats().command_errors);
                let msg = format!("line longer than {MAX_LINE} bytes ignored");
                conn.write_reply(&Reply::status(Status::Usage(msg))).await?;
                continue;
            }
            Some(Line::NotUtf8) => {
                Stats::bump(&ctx.stats().command_errors);
                let msg = "line is not valid UTF-8; ignored".to_string();
                conn.write_reply(&Reply::status(Status::Usage(msg))).await?;
                continue;
            }
        };
        let words = match tokenize(&text) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(e) => {
                Stats::bump(&ctx.stats().command_errors);
                conn.write_reply(&Reply::status(Status::Usage(e.to_string())))
                    .await?;
                continue;
            }
        };
        Stats::bump(&ctx.stats().commands);
        let cmd = match SessionCommand::parse(words) {
            Ok(c) => c,
            Err(e) => {
                Stats::bump(&ctx.stats().command_errors);
                conn.write_reply(&Reply::status(Status::Usage(e))).await?;
                continue;
            }
        };
        if let SessionCommand::Request(request) = &cmd {
            if let Some(refusal) = caller.check(request, &ctx.access).await {
                send(ctx, &mut conn, &refusal).await?;
                continue;
            }
        }
        match cmd {
            SessionCommand::Quit => {
                conn.write_reply(&Reply::ok_text("bye")).await?;
                return Ok(());
            }
            SessionCommand::Help { command } => {
                conn.write_reply(&cmd::help::apply(command.as_deref()))
                    .await?;
            }
            SessionCommand::Request(Request::Debug) => cmd::debug::run(ctx, &mut conn).await?,
            SessionCommand::Request(Request::Events(c)) => {
                cmd::events::run(&c, ctx, &mut conn).await?
            }
            SessionCommand::Request(Request::Wait(c)) => {
                match cmd::wait::run(&c, ctx, &mut conn).await? {
                    Some(reply) => send(ctx, &mut conn, &reply).await?,
                    // The client left while waiting: the session is over.
                    None => return Ok(()),
                }
            }
            SessionCommand::Request(request) => {
                let reply = cmd::apply(&request, ctx).await;
                send(ctx, &mut conn, &reply).await?;
            }
        }
    }
}

/// Send a command's reply, counting it as an error unless it succeeded or matched nothing.
async fn send(ctx: &Context, conn: &mut Connection, reply: &Reply) -> std::io::Result<()> {
    if !matches!(reply.status, Status::Ok(_) | Status::NoMatch(_)) {
        Stats::bump(&ctx.stats().command_errors);
    }
    conn.write_reply(reply).await
}
