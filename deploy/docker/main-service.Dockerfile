# syntax=docker/dockerfile:1
# The main-service image. Build from the repository root:
#   docker build -f deploy/docker/main-service.Dockerfile -t dwp/main-service .
# Configuration comes from environment variables only (README.md).

# 1. A recipe of the workspace's dependencies (cargo-chef), so that the
#    dependency layer below is rebuilt only when Cargo.toml/Cargo.lock change.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# 2. Dependencies (cached), then the binary.
FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
COPY vendor vendor
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p main-service --bin main-service -p migration --bin migration

# 3. A slim runtime: CA certificates and curl (for the health check), a
#    non-root user, nothing else.
FROM debian:bookworm-slim AS runtime
# Versions are those of the bookworm release the image is pinned to.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dwp
COPY --from=build /src/target/release/main-service /usr/local/bin/main-service
# The migration command (`migration up`), for the one-shot migration job.
COPY --from=build /src/target/release/migration /usr/local/bin/migration
USER 10001
ENV SERVER_HOST=0.0.0.0 SERVER_PORT=8081 RUST_LOG=info LOG_FORMAT=json
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:8081/main/health" || exit 1
ENTRYPOINT ["/usr/local/bin/main-service"]
