//! The main-service binary: the `user` and `migration` commands, or the
//! server: tracing, configuration, bind, run until SIGTERM or SIGINT.

use dwp_core::service::{self, Binary};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = main_service::cli::run(&args).await {
        return code;
    }
    let shutdown = service::shutdown_signal();
    service::init_tracing();
    let binary = Binary {
        name: "main-service",
        config: main_service::Config::load(),
        listen: |c| format!("{}:{}", c.host, c.port),
    };
    service::main(binary, shutdown, main_service::run).await
}
