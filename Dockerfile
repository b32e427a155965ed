# syntax=docker/dockerfile:1.7
#
# One parametrised image per service:
#
#   docker build --build-arg SERVICE=catalog --build-arg SERVICE_VERSION=1.3.0 -t fleet/catalog:1.3.0 .
#
# SERVICE is one of edge, catalog, ratings, dal (a `--bin` of the workspace);
# SERVICE_VERSION becomes the image's OCI version label and its default
# SERVICE_VERSION (catalog: 1.2.x, 1.3.x or 2.0.x, the others 1.0.0);
# MAIN_PORT and ADMIN_PORT are the service's default ports (edge 8080/9080,
# catalog 7100/9100, ratings 7200/9200, dal 7300/9300): ADMIN_PORT becomes
# the image's ADMIN_ADDR, which the service and the health probe both read.
#
# Stages: chef (cargo-chef) → planner (dependency recipe) → builder (deps
# cooked in their own layer, shared by every service because SERVICE is
# declared only after it; then the service binary and the probe) → runtime
# (distroless, non-root, no shell, read-only root friendly).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS chef
# cargo-chef pinned; installed from crates.io with its lock file.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# Only the manifests matter for the recipe: source edits do not invalidate
# the dependency layer below.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# protoc comes from protoc-bin-vendored (see platform/proto/build.rs).
# No build argument is in scope yet, so this layer is the same for every
# service: BuildKit cooks the dependencies once, not once per SERVICE.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The health probe (cli/probe): distroless has no shell and no wget.
RUN cargo build --release --locked --bin fleet-probe \
 && install -D -m 0755 target/release/fleet-probe /out/fleet-probe
ARG SERVICE
RUN test -n "${SERVICE}" \
 && cargo build --release --locked --bin "${SERVICE}" \
 && install -D -m 0755 "target/release/${SERVICE}" /out/service \
 && install -d -m 0755 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
ARG SERVICE_VERSION=1.0.0
ARG MAIN_PORT=7100
ARG ADMIN_PORT=9100
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fleet-${SERVICE}" \
      org.opencontainers.image.description="fleet ${SERVICE} service" \
      org.opencontainers.image.version="${SERVICE_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/fleet" \
      io.fleet.service="${SERVICE}"
COPY --from=builder /out/fleet-probe /usr/local/bin/fleet-probe
COPY --from=builder /out/service /usr/local/bin/service
# The only writable path the dal needs (a volume; everything else is
# read-only). Owned by distroless's nonroot user.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/fleet
ENV SERVICE_VERSION=${SERVICE_VERSION} \
    ADMIN_ADDR=0.0.0.0:${ADMIN_PORT} \
    RUST_LOG=info
WORKDIR /var/lib/fleet
VOLUME ["/var/lib/fleet"]
USER 65532:65532
EXPOSE ${MAIN_PORT} ${ADMIN_PORT}
# Readiness of the admin port: with no URL, fleet-probe GETs /readyz on
# the port of ADMIN_ADDR (set above per service; compose and Kubernetes set
# their own checks and probes anyway).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/fleet-probe", "--timeout", "2s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
