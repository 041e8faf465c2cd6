//! The aura-sim binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match aura_sim::Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aura-sim: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("aura-sim: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let shutdown = async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            return std::future::pending().await;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    };
    match aura_sim::run(listener, config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aura-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
