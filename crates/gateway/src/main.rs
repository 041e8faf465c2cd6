//! The gateway binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use gateway::Config;

/// jemalloc: fewer cycles per request than the system allocator, and it
/// leaves untouched buffer pages unbacked, which keeps idle streams small.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

// Worker 0 runs on this single-threaded runtime; `run` starts the others.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let shutdown = shutdown_signal();
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }

    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Freed pages go back to the system on jemalloc's decay timer even
    // while the gateway is idle (without the thread, purging waits for the
    // next allocations): 1,000 closed streams leave no resident memory
    // behind.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("jemalloc background thread: {e}");
    }
    // Every stream holds two descriptors (client and agent): lift the soft
    // limit to the hard one, as nginx's `worker_rlimit_nofile` would.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let addr = format!("{}:{}", config.host, config.port);
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("gateway: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match gateway::run(listener, config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Registers SIGTERM and SIGINT at once, so that a signal arriving while the
/// process starts is a graceful shutdown and not the default kill, and
/// returns the future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
