//! The main-service binary: the `user` and `migration` commands, or the
//! server: tracing, configuration, bind, run until SIGTERM or SIGINT.

use dwp_core::service::{self, About, Binary};

const ABOUT: About = About {
    name: "main-service",
    version: env!("CARGO_PKG_VERSION"),
    help: "\
usage: main-service [--help | --version]
       main-service user add --tenant TENANT --username USERNAME --password-stdin

With no command: the HITL approval service, login and the sign-in API,
agent tasks, and the consumers of the decision and task streams.
`user add` creates a login account (the password from standard input).

Settings come from the environment or config/main-service.toml (README,
Configuration), among them:
  SERVER_HOST, SERVER_PORT      where it listens (0.0.0.0:8081)
  JWT_SECRET                    HS256 secret, at least 32 bytes (required)
  DATABASE_URL                  PostgreSQL
  REDIS_URL                     HITL requests, signals and streams
  ADMIN_PORT                    /metrics and /health (8091; off)
  LOG_FORMAT                    json for JSON lines
",
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match service::arguments(&ABOUT, std::env::args()) {
        Ok(args) => args,
        Err(code) => return code,
    };
    if let Some(code) = main_service::cli::run(&args).await {
        return code;
    }
    let shutdown = service::shutdown_signal();
    service::init_tracing();
    let binary = Binary {
        name: ABOUT.name,
        version: ABOUT.version,
        config: main_service::Config::load(),
        listen: |c| format!("{}:{}", c.host, c.port),
    };
    service::main(binary, shutdown, main_service::run).await
}
