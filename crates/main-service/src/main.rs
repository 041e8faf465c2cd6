//! The main-service binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use main_service::Config;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = main_service::cli::run(&args).await {
        return code;
    }
    let shutdown = shutdown_signal();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }

    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("main-service: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("main-service: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match main_service::run(listener, config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-service: {e}");
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
