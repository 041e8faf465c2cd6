//! The gateway binary: tracing, configuration, bind, run until SIGTERM or SIGINT.

use dwp_core::service::{self, About, Binary};

const ABOUT: About = About {
    name: "gateway",
    version: env!("CARGO_PKG_VERSION"),
    help: "\
usage: gateway [--help | --version]

The single entry point: routes /api/** to Aura-Platform, main-service and
the auth server, relays Server-Sent Events unbuffered, checks tokens at
the edge and records agent streams into Redis.

Settings come from the environment (README, Configuration), among them:
  SERVER_HOST, SERVER_PORT      where it listens (0.0.0.0:8080)
  JWT_SECRET                    HS256 secret, at least 32 bytes (required)
  AURA_PLATFORM_URI             Aura-Platform (http://localhost:9000)
  MAIN_SERVICE_URI              main-service (http://localhost:8081)
  REDIS_URL                     the stream recorder's Redis
  ADMIN_PORT                    /metrics and /health (8090; off)
  LOG_FORMAT                    json for JSON lines
",
};

/// jemalloc: fewer cycles per request than the system allocator, and it
/// leaves untouched buffer pages unbacked, which keeps idle streams small.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Worker 0 runs on this single-threaded runtime; `run` starts the others.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    if let Err(code) = service::arguments(&ABOUT, std::env::args())
        .and_then(|args| service::no_arguments(&ABOUT, &args))
    {
        return code;
    }
    let shutdown = service::shutdown_signal();
    service::init_tracing();
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
    let binary = Binary {
        name: ABOUT.name,
        version: ABOUT.version,
        config: gateway::Config::load(),
        listen: |c| format!("{}:{}", c.host, c.port),
    };
    service::main(binary, shutdown, gateway::run).await
}
