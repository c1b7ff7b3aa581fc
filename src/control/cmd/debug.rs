//! `debug`: stream notable events to this session until it sends a line or disconnects.

use tokio::sync::broadcast::error::RecvError;

use crate::control::connection::Connection;
use crate::control::Context;
use crate::protocol::frame::{encode_body_line, Status};

/// Stream events as body lines; any line from the client (or shutdown) ends the reply.
pub async fn run(ctx: &Context, conn: &mut Connection) -> std::io::Result<()> {
    let mut events = ctx.events().subscribe();
    let head = Status::Ok("streaming events; send any line to stop".into()).line();
    conn.write_raw(format!("{head}\n").as_bytes()).await?;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            line = conn.read_line() => {
                // A line or end of stream: either way the stream ends here.
                let _ = line?;
                break;
            }
            ev = events.recv() => {
                let text = match ev {
                    Ok(text) => text,
                    Err(RecvError::Lagged(n)) => format!("({n} events dropped: this session reads too slowly)"),
                    Err(RecvError::Closed) => break,
                };
                conn.write_raw(format!("{}\n", encode_body_line(&text)).as_bytes()).await?;
            }
        }
    }
    conn.write_raw(b".\n").await
}
