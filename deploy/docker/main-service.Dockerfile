# syntax=docker/dockerfile:1
# The main-service image. Build from the repository root:
#   docker build -f deploy/docker/main-service.Dockerfile -t dwp/main-service .
# Configuration comes from environment variables only (README.md).
# `make image-check` builds it for real with buildah (scripts/deploy/image_check.sh).

# The base images are build arguments, so that a mirror or an image made
# offline can stand in for Docker Hub's.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# jemalloc's build runs make, which the slim Rust images lack.
# hadolint ignore=DL3008
RUN if ! command -v make >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends make \
        && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY . .
# Crates and the target directory persist between builds (cache mounts of
# BuildKit, buildah and podman), so a rebuild compiles only what changed.
RUN --mount=type=cache,id=dwp-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=dwp-target,target=/src/target,sharing=locked \
    mkdir -p /out \
    && cargo build --release --locked -p main-service --bin main-service -p migration --bin migration \
    && install -m 0755 target/release/main-service /out/main-service \
    && install -m 0755 target/release/migration /out/migration

# A slim runtime: CA certificates and curl (for the health check), a
# non-root user, nothing else.
FROM ${RUNTIME_IMAGE} AS runtime
# Versions are those of the bookworm release the image is pinned to.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 dwp \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin dwp
# `migration up`: the migrate init container of the Kubernetes recipe.
COPY --from=build /out/main-service /usr/local/bin/main-service
COPY --from=build /out/migration /usr/local/bin/migration
USER 10001
ENV SERVER_HOST=0.0.0.0 SERVER_PORT=8081 RUST_LOG=info LOG_FORMAT=json
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8081/main/health"]
ENTRYPOINT ["/usr/local/bin/main-service"]
