//! Accepts control sessions and runs each in its own task.
//!
//! Sessions are capped: past `MAX_SESSIONS` a new client gets an error reply and is closed at
//! once, so stalled clients can never make the daemon queue or stop answering others.
//! Accept errors (for example EMFILE) back off with a cap and reset on success.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::access;
use super::cmd;
use super::connection::{Connection, Line};
use super::Context;
use crate::model::Backoff;
use crate::protocol::frame::{tokenize, Reply, Status, MAX_LINE};
use crate::protocol::{Request, SessionCommand};
use crate::telemetry::Stats;

/// Most control sessions open at once.
pub const MAX_SESSIONS: usize = 1024;

/// Serve the listener until shutdown.
pub async fn serve(ctx: Context, listener: UnixListener, tracker: TaskTracker) {
    let limit = Arc::new(Semaphore::new(MAX_SESSIONS));
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut session_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown().cancelled() => return,
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
                    _ = ctx.shutdown().cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            Stats::bump(&ctx.stats().sessions_refused);
            tracker.spawn(refuse(stream));
            continue;
        };
        session_id += 1;
        let span = tracing::debug_span!("session", id = session_id);
        let ctx = ctx.clone();
        tracker.spawn(
            async move {
                Stats::bump(&ctx.stats().sessions_total);
                Stats::bump(&ctx.stats().sessions_open);
                if let Err(e) = session(&ctx, stream).await {
                    tracing::debug!("session ended: {e}");
                }
                Stats::drop_one(&ctx.stats().sessions_open);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn refuse(stream: UnixStream) {
    let mut conn = Connection::new(stream);
    let reply = Reply::status(Status::Error(format!(
        "too many sessions (limit {MAX_SESSIONS}); try again later"
    )));
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.write_reply(&reply)).await;
}

/// The greeting every session starts with (the Perl diskd's words, then ours).
pub fn greeting(ctx: &Context) -> Reply {
    Reply {
        status: Status::Ok(format!(
            "diskd local interface awaiting commands (diskd {}, node {})",
            env!("CARGO_PKG_VERSION"),
            ctx.node().name
        )),
        body: vec![
            "Type 'help' for the commands. Each reply is a status line (+OK or -ERR ...),".into(),
            "body lines, and a line with a single '.'.".into(),
        ],
    }
}

async fn session(ctx: &Context, stream: UnixStream) -> std::io::Result<()> {
    let caller = access::Caller::of(&stream);
    let mut conn = Connection::new(stream);
    conn.write_reply(&greeting(ctx)).await?;
    loop {
        let line = tokio::select! {
            _ = ctx.shutdown().cancelled() => {
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
            if let Some(refusal) = caller.check(request, ctx.access()).await {
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
