//! The read-only HTTP listener: a web page, Prometheus `/metrics` and a JSON API over the
//! fleet picture, opt-in with `http.listen`.
//!
//! A sibling of the control server, built from the same handles (`control::Context`), and
//! answering from the same query functions (`control::cmd::list::disks`, ...): a query
//! answers alike whichever door it came in by. Nothing here changes anything: no mount, no
//! ping, no refresh; only GET and HEAD are served, anything else is 405 before routing.
//!
//! Bounded like the control socket: at most [`MAX_CONNECTIONS`] connections (the next
//! gets a 503 at once), [`MAX_EVENT_STREAMS`] event streams, a deadline on reading a
//! request's head and on producing a response, small header buffers, and at most
//! [`BLOCKING_AT_ONCE`] requests that measure the store on disk (`/metrics`, status) at
//! a time, so a flood of requests cannot starve the rest of the daemon. Served with hyper's
//! HTTP/1.1 connection on an accept loop of our own (rather than `axum::serve`) for those
//! limits; shutdown is the daemon's one `CancellationToken`, after which every connection
//! finishes its response and closes (event streams end).
//!
//! `auth` checks the bearer token, `api` answers the JSON endpoints and the event stream,
//! `metrics` renders the counters for Prometheus, `page` serves the web page.

mod api;
mod auth;
mod metrics;
mod page;
mod stall;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{
    HeaderName, ALLOW, CACHE_CONTROL, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use auth::{Token, TokenError};

use crate::config::HttpSettings;
use crate::control::Context;
use crate::model::Backoff;
use crate::telemetry::Stats;

/// Most HTTP connections open at once; the next one gets a 503 and is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Most `/api/v1/events` streams at once (each holds a connection as long as it lasts).
pub const MAX_EVENT_STREAMS: usize = 64;
/// Most requests measuring the store on disk (`/metrics`, `/api/v1/status`) running at
/// once, each on a blocking thread; more wait (within their deadline).
pub const BLOCKING_AT_ONCE: usize = 2;
/// A client must send a request's head within this time (slow or idle clients are
/// closed, so they cannot hold connection slots).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A response must be ready within this time, else 503 (an event stream's body is not
/// bound by it, only its start).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose client takes nothing of a response (or an event stream) for this
/// long is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most connections being turned away at once; past it they are closed without a reply.
const MAX_REFUSING: usize = 256;
/// How long a connection may take to finish its response after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Why the listener cannot start (exit 2, one line naming the key or path).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be bound (in use, not ours, ...).
    #[error("http.listen {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The token file is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A bound listener with its token, ready to serve: binding and reading the token happen
/// at start, so a port in use or a bad token file stops the daemon before it serves.
pub struct Listener {
    listener: TcpListener,
    token: Option<Token>,
    addr: SocketAddr,
}

impl Listener {
    /// Read the token (if configured) and bind the address. Call within the runtime.
    pub fn bind(settings: &HttpSettings) -> Result<Listener, HttpError> {
        let token = match &settings.token_file {
            Some(path) => Some(Token::load(path)?),
            None => None,
        };
        let addr = settings.listen;
        let bind = |source| HttpError::Bind { addr, source };
        let listener = std_listener(addr).map_err(bind)?;
        let listener = TcpListener::from_std(listener).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        Ok(Listener {
            listener,
            token,
            addr,
        })
    }

    /// The bound address (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether requests need the bearer token.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }
}

/// A listening socket with a backlog of 1024 (std's 128 would drop the SYNs of a burst of
/// clients, who then wait a second to retry), `SO_REUSEADDR` so a restart finds the port
/// free at once.
fn std_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The HTTP server's own counters, shown in `/metrics`.
#[derive(Debug, Default)]
struct HttpStats {
    /// Connections open now.
    connections_open: AtomicU64,
    /// Connections accepted since start.
    connections_total: AtomicU64,
    /// Connections turned away at [`MAX_CONNECTIONS`].
    connections_refused: AtomicU64,
    /// Requests received (past the head; before authentication).
    requests: AtomicU64,
    /// Requests refused for a missing or wrong token.
    unauthorized: AtomicU64,
}

/// What every handler gets: the control server's context plus the HTTP server's limits.
#[derive(Clone)]
struct AppState {
    ctx: Context,
    token: Option<Arc<Token>>,
    blocking: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    stats: Arc<HttpStats>,
}

impl AppState {
    /// Run `f` (which does file I/O) on a blocking thread, at most [`BLOCKING_AT_ONCE`]
    /// at a time. The slot is held by the thread, not the request: a request that gives
    /// up at its deadline does not free a slot while its work still runs.
    async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Context) -> T + Send + 'static,
    ) -> Result<T, Response> {
        let permit = self
            .blocking
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"))?;
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f(&ctx)
        })
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed: {e}"),
            )
        })
    }
}

/// An error response: the status and `{"error": MESSAGE}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Every endpoint. Layers run outermost last-added: the deadline and common headers, then
/// the token, then the method check, then the route.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/disks", get(api::disks))
        .route("/api/v1/disks/{term}/history", get(api::history))
        .route("/api/v1/peers", get(api::peers))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/events", get(api::events))
        .fallback(not_found)
        .layer(middleware::from_fn(read_only))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see docs/http-and-metrics.md)",
    )
}

/// Read-only, enforced in one place: GET and HEAD reach the routes, every other method
/// gets 405 whatever the path.
async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} not allowed: this listener is read-only", req.method()),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

/// The response deadline, and the headers every response carries: no sniffing, no
/// framing, no referrer, and no caching of fleet data unless a handler says otherwise.
async fn guard(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    Stats::bump(&st.stats.requests);
    let mut resp = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no answer within {REQUEST_TIMEOUT:?}; try again"),
        ),
    };
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(h, X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, X_FRAME_OPTIONS, "DENY");
    set(h, REFERRER_POLICY, "no-referrer");
    set(h, CACHE_CONTROL, "no-store");
    resp
}

/// Serve until the daemon's shutdown: accept, cap, hand each connection to hyper.
pub async fn serve(listener: Listener, ctx: Context, tracker: TaskTracker) {
    let shutdown = ctx.shutdown.clone();
    let state = AppState {
        token: listener.token.map(Arc::new),
        blocking: Arc::new(Semaphore::new(BLOCKING_AT_ONCE)),
        streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        stats: Arc::new(HttpStats::default()),
        ctx,
    };
    let app = router(state.clone());
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff.reset();
                a
            }
            Err(e) => {
                // EMFILE and the like: wait a little, as the control server does.
                let wait = backoff.next_delay();
                tracing::warn!("http: accept failed: {e}; retrying in {wait:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            Stats::bump(&state.stats.connections_refused);
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tracker.spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let stats = state.stats.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                Stats::bump(&stats.connections_total);
                Stats::bump(&stats.connections_open);
                connection(stream, app, shutdown).await;
                Stats::drop_one(&stats.connections_open);
                drop(permit);
            }
            .instrument(tracing::debug_span!("http", peer = %peer)),
        );
    }
}

/// One connection: HTTP/1.1 with keep-alive, a deadline on every request head, bounded
/// head size; on shutdown, the response in progress is finished and the connection closed.
async fn connection(stream: TcpStream, app: Router, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(stall::WriteDeadline::new(stream, WRITE_TIMEOUT)),
            TowerToHyperService::new(app),
        );
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// Turn a connection away at the limit: a 503 saying so, then close. What the client
/// sent is drained first (briefly), so the close does not reset the connection before
/// the client has read the reply.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "{\"error\":\"too many connections; try again later\"}";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
