//! The `diskd` binary: parse flags, pick the mode, map the outcome to an exit code.
// `deny`, not `forbid`: the one exception is jemalloc's options below.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use diskd::client::{oneshot, repl};
use diskd::config::{self, Config};
use diskd::flags::{Cli, Command, DaemonArgs};
use diskd::protocol::Request;

/// glibc's malloc gives each thread that allocates (tokio's workers, sled's I/O threads) an
/// arena of its own and returns little of them: a daemon holding 160,000 records stayed at
/// 161 MB resident, 118 MB with jemalloc, which also starts it 20 % sooner (BENCHMARKS.md,
/// "One daemon, 10,000 hosts"). mimalloc was tried too: 208 MB.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start. One arena instead of four per core: the
/// daemon's threads (tokio's workers, sled's I/O threads) take turns more than they
/// allocate at once, and every arena keeps pages of its own after a first contact; freed
/// pages go back after a second. With 10,000 gossip members x 16 disks: 124 MB resident
/// after the waves instead of 144, 117 MB once idle instead of 134 (BENCHMARKS.md). The
/// daemon also starts jemalloc's background thread (`tune_allocator`); `_RJEM_MALLOC_CONF`
/// in the environment overrides all of it.
#[allow(unsafe_code)] // An exported symbol that jemalloc reads; nothing else.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8] = b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Start jemalloc's background thread, which purges freed pages on time: otherwise it
/// purges only when the process allocates again, which an idle daemon hardly does. Not in
/// `MALLOC_CONF`, as a one-shot client would pay a quarter of a millisecond to start it.
/// What the allocator runs with is logged at debug level under the target `jemalloc`
/// (`RUST_LOG=jemalloc=debug`), apart from the daemon's own `diskd=debug` lines.
fn tune_allocator() {
    use tikv_jemalloc_ctl::{background_thread, opt};
    if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
        if let Err(e) = background_thread::write(true) {
            tracing::debug!(target: "jemalloc", "background thread not started: {e}");
        }
    }
    tracing::debug!(
        target: "jemalloc",
        arenas = opt::narenas::read().unwrap_or(0),
        background_thread = background_thread::read().unwrap_or(false),
        "allocator: jemalloc"
    );
}

fn main() -> ExitCode {
    // A one-shot client command is parsed without the daemon's flags (see `ClientCli`).
    if let Some(c) = diskd::flags::ClientCli::try_from_env() {
        return ExitCode::from(request(c.global.socket, c.global.config, &c.request));
    }
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

/// Run a one-shot request against the daemon.
fn request(socket: Option<PathBuf>, config_file: Option<PathBuf>, req: &Request) -> u8 {
    match client_socket(socket, config_file) {
        Ok(s) => oneshot::run(&s, req),
        Err(e) => {
            eprintln!("diskd: {e}");
            2
        }
    }
}

fn run(cli: Cli) -> u8 {
    if cli.daemon_flag && cli.command.is_some() {
        eprintln!(
            "diskd: -d/--daemon cannot be combined with a subcommand (use `diskd daemon ...`)"
        );
        return 2;
    }
    match cli.command {
        Some(Command::Daemon(args)) => daemon(cli.global.config, cli.global.socket, &args),
        None if cli.daemon_flag => {
            daemon(cli.global.config, cli.global.socket, &DaemonArgs::default())
        }
        Some(Command::Keygen { file }) => keygen(file.as_deref()),
        Some(Command::Completions { shell }) => {
            to_stdout(|out| diskd::generate::completions(shell, out))
        }
        Some(Command::Man) => to_stdout(diskd::generate::man_page),
        Some(Command::Request(req)) => request(cli.global.socket, cli.global.config, &req),
        None => match client_socket(cli.global.socket, cli.global.config) {
            Ok(socket) => repl::run(&socket),
            Err(e) => {
                eprintln!("diskd: {e}");
                2
            }
        },
    }
}

/// The sockets a client tries: `--socket`/`DISKD_SOCKET`, else the config file's `socket`,
/// else `~/.diskd-socket`, then the system daemon's socket.
fn client_socket(
    flag: Option<PathBuf>,
    config_file: Option<PathBuf>,
) -> Result<Vec<PathBuf>, config::ConfigError> {
    if let Some(s) = flag {
        return Ok(vec![s]);
    }
    if let Some(f) = config_file {
        if let Some(s) = config::socket_from_file(&f)? {
            return Ok(vec![s]);
        }
    }
    Ok(config::client_default_sockets())
}

fn daemon(config_file: Option<PathBuf>, socket: Option<PathBuf>, args: &DaemonArgs) -> u8 {
    let config = match Config::load(config_file.as_deref(), socket.as_deref(), args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("diskd: {e}");
            return 2;
        }
    };
    init_tracing(args.log.level.as_deref(), config.log_format);
    tune_allocator();
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("diskd: cannot start the runtime: {e}");
            return 3;
        }
    };
    match runtime.block_on(diskd::daemon::run(config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("diskd: {e:#}");
            e.exit_code()
        }
    }
}

/// Up to 1,024 control sessions plus sockets and store files need more descriptors than the
/// common soft limit of 1,024: raise the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                tracing::warn!("cannot raise the open-files limit from {soft}: {e}");
            }
        }
    }
}

/// `diskd keygen [FILE]`: a fresh key to a new file (mode 0600), or to stdout.
fn keygen(file: Option<&std::path::Path>) -> u8 {
    match file {
        None => {
            println!("{}", diskd::peer::keys::generate());
            0
        }
        Some(path) => match diskd::peer::keys::write_new_key(path) {
            Ok(fingerprint) => {
                eprintln!(
                    "diskd: wrote a new key to {} (fingerprint {fingerprint})",
                    path.display()
                );
                0
            }
            Err(e) => {
                eprintln!("diskd: cannot write a key to {}: {e}", path.display());
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    2
                } else {
                    3
                }
            }
        },
    }
}

/// Run a generator into stdout. A reader that stops early (`diskd man | head`) is not an
/// error.
fn to_stdout(generate: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> u8 {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match generate(&mut out).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("diskd: cannot write to stdout: {e}");
            3
        }
    }
}

/// Log to stderr (journald takes it from there), as text or, for log shippers, as one
/// JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
/// structured fields (`peer`, `watcher`, `reason`, ...) at the top level, plus the spans
/// it happened in (a control session's id).
fn init_tracing(level: Option<&str>, format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        config::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
