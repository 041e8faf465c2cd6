//! The aura-sim binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use dwp_core::service::{self, Binary};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let shutdown = service::shutdown_signal();
    service::init_tracing();
    let binary = Binary {
        name: "aura-sim",
        config: aura_sim::Config::load(),
        listen: |c| format!("{}:{}", c.host, c.port),
    };
    service::main(binary, shutdown, aura_sim::run).await
}
