# syntax=docker/dockerfile:1
# pgdrill: multi-stage build. Builder: the Rust toolchain pinned in
# Cargo.toml (rust-version). Runtime: distroless cc (glibc, libssl, CA
# certificates; no shell, no package manager), as the non-root user.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin pgdrill \
 && install -D -m 0755 target/release/pgdrill /out/pgdrill

FROM gcr.io/distroless/cc-debian12:nonroot
# OCI image annotations (tests/it/manifests.rs keeps them in step with
# Cargo.toml). Where the image is built from: pass
# --label org.opencontainers.image.source=<your repository URL> (docs/deploy.md).
LABEL org.opencontainers.image.title="pgdrill"
LABEL org.opencontainers.image.description="PostgreSQL failover drills and write canaries: open-loop pooled INSERT load, RTO/RPO measurement, Prometheus metrics"
LABEL org.opencontainers.image.version="0.1.0"
LABEL org.opencontainers.image.licenses="Apache-2.0"
LABEL org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/pgdrill /usr/local/bin/pgdrill
# uid/gid 65532 ("nonroot" in distroless images).
USER 65532:65532
# Prometheus metrics, /healthz (pgdrill --listen 0.0.0.0:9743).
EXPOSE 9743
ENTRYPOINT ["/usr/local/bin/pgdrill"]
CMD ["--help"]
