# syntax=docker/dockerfile:1.7
#
# One parametrised image per service:
#
#   docker build --build-arg SERVICE=catalog --build-arg SERVICE_VERSION=1.3.0 -t fleet/catalog:1.3.0 .
#
# SERVICE is one of edge, catalog, ratings, dal (a `--bin` of the workspace);
# SERVICE_VERSION becomes the image's OCI version label and its default
# SERVICE_VERSION (catalog: 1.2.x or 1.3.x, the others 1.0.0); MAIN_PORT and
# ADMIN_PORT are the service's default ports (edge 8080/9080, catalog
# 7100/9100, ratings 7200/9200, dal 7300/9300).
#
# Stages: chef (cargo-chef) → planner (dependency recipe) → builder (deps
# cooked in their own layer, then the one binary) → runtime (distroless,
# non-root, no shell, read-only root friendly).

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
ARG SERVICE
COPY --from=planner /src/recipe.json recipe.json
# protoc comes from protoc-bin-vendored (see platform/proto/build.rs).
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN test -n "${SERVICE}" \
 && cargo build --release --locked --bin "${SERVICE}" \
 && install -D -m 0755 "target/release/${SERVICE}" /out/service \
 && install -d -m 0755 /out/data

# Static busybox for the HEALTHCHECK only (distroless has no shell or wget).
FROM busybox:1.37.0-musl AS probe

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
COPY --from=probe /bin/busybox /usr/local/bin/busybox
COPY --from=builder /out/service /usr/local/bin/service
# The only writable path the dal needs (a volume; everything else is
# read-only). Owned by distroless's nonroot user.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/fleet
ENV SERVICE_VERSION=${SERVICE_VERSION} \
    DATA_DIR=/var/lib/fleet/dal \
    RUST_LOG=info \
    ADMIN_PORT=${ADMIN_PORT}
WORKDIR /var/lib/fleet
VOLUME ["/var/lib/fleet"]
USER 65532:65532
EXPOSE ${MAIN_PORT} ${ADMIN_PORT}
# Readiness of the admin port (ADMIN_PORT is baked per service at build
# time; compose and Kubernetes set their own probes anyway).
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/busybox", "sh", "-c", "wget -q -T 2 -O /dev/null http://127.0.0.1:${ADMIN_PORT}/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
