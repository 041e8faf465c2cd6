//! The start-up every binary shares, so that each `main.rs` is a few
//! lines: tracing (`RUST_LOG`, default `info`; `LOG_FORMAT=json` for JSON
//! lines), SIGTERM and SIGINT registered before anything else (a signal
//! while the process starts is a graceful shutdown, not the default kill),
//! the configuration, the listener, the run, and the exit code: 2 for a bad
//! configuration, 1 when the address cannot be bound, 1 when the run fails.
//! Before any of it, [`arguments`] answers `--help` and `--version`.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// What a binary says about itself on `--help` and `--version`.
pub struct About {
    /// The program name.
    pub name: &'static str,
    /// The crate version (`env!("CARGO_PKG_VERSION")` of the binary).
    pub version: &'static str,
    /// The `--help` text after the first line: usage, what it does, the
    /// settings that matter most.
    pub help: &'static str,
}

/// The command line before anything starts: `--help` / `-h` prints the
/// help and `--version` / `-V` the version, both to standard output with
/// exit code 0, so neither ever starts a server. Otherwise the arguments
/// after the program name, for the binary's own commands.
pub fn arguments(
    about: &About,
    args: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, ExitCode> {
    let args: Vec<String> = args.into_iter().skip(1).collect();
    let wants = |flags: [&str; 2]| args.iter().any(|a| flags.contains(&a.as_str()));
    if wants(["--help", "-h"]) {
        println!(
            "{} {}\n\n{}",
            about.name,
            about.version,
            about.help.trim_end()
        );
        return Err(ExitCode::SUCCESS);
    }
    if wants(["--version", "-V"]) {
        println!("{} {}", about.name, about.version);
        return Err(ExitCode::SUCCESS);
    }
    Ok(args)
}

/// A server binary takes no arguments: anything left after [`arguments`]
/// is refused with exit code 2 and a pointer to `--help`.
pub fn no_arguments(about: &About, args: &[String]) -> Result<(), ExitCode> {
    match args.first() {
        None => Ok(()),
        Some(first) => {
            eprintln!(
                "{}: unexpected argument {first:?}; settings come from the environment (see --help)",
                about.name
            );
            Err(ExitCode::from(2))
        }
    }
}

/// Starts tracing as every binary does.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Registers SIGTERM and SIGINT at once and returns the future that
/// completes on either.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    }
}

/// What a binary gives [`main`]: its name, its configuration (or why it
/// cannot be used), and where it listens.
pub struct Binary<C, E> {
    /// The name in messages (and `service.name` of exported spans).
    pub name: &'static str,
    /// The version (`service.version` of exported spans).
    pub version: &'static str,
    /// The loaded configuration.
    pub config: Result<C, E>,
    /// `host:port` to listen on.
    pub listen: fn(&C) -> String,
}

/// Runs a server binary: the signals are already registered by the
/// caller's `shutdown` (see [`shutdown_signal`]), then the configuration
/// is checked, the listener bound and `run` awaited until it returns.
pub async fn main<C, E, S, F, Fut>(binary: Binary<C, E>, shutdown: S, run: F) -> ExitCode
where
    E: Display,
    S: Future<Output = ()>,
    F: FnOnce(TcpListener, C, S) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let name = binary.name;
    let config = match binary.config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // OTLP export (crate::otel) when the standard variables ask for it.
    match crate::otel::Endpoint::from_vars(|var| std::env::var(var).ok()) {
        Err(e) => {
            eprintln!("{name}: bad configuration: {e}");
            return ExitCode::from(2);
        }
        Ok(Some(endpoint)) => {
            if let Err(e) = crate::otel::start(name, binary.version, endpoint.clone()) {
                eprintln!("{name}: cannot start the trace exporter: {e}");
                return ExitCode::from(1);
            }
            tracing::info!(
                host = endpoint.host,
                port = endpoint.port,
                path = endpoint.path,
                "exporting traces over OTLP/HTTP"
            );
        }
        Ok(None) => {}
    }
    let addr = (binary.listen)(&config);
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let ran = run(listener, config, shutdown).await;
    crate::otel::flush(std::time::Duration::from_secs(2));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
