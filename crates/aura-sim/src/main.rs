//! The aura-sim binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use dwp_core::service::{self, About, Binary};

const ABOUT: About = About {
    name: "aura-sim",
    version: env!("CARGO_PKG_VERSION"),
    help: "\
usage: aura-sim [--help | --version]

The reference agent: streams an Aura-Platform run as Server-Sent Events
and pauses for a human decision over Redis, the way the real agent does.

Settings come from the environment (README, Configuration), among them:
  SERVER_HOST, SERVER_PORT      where it listens (0.0.0.0:9000)
  JWT_SECRET                    HS256 secret, at least 32 bytes (required)
  REDIS_URL                     HITL requests, signals and channels
  HITL_TIMEOUT_SECS             how long a run waits for a decision (300)
  AURA_SIM_WAIT                 agent (as the real agent) or robust
  LOG_FORMAT                    json for JSON lines
",
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Err(code) = service::arguments(&ABOUT, std::env::args())
        .and_then(|args| service::no_arguments(&ABOUT, &args))
    {
        return code;
    }
    let shutdown = service::shutdown_signal();
    service::init_tracing();
    let binary = Binary {
        name: ABOUT.name,
        version: ABOUT.version,
        config: aura_sim::Config::load(),
        listen: |c| format!("{}:{}", c.host, c.port),
    };
    service::main(binary, shutdown, aura_sim::run).await
}
