# syntax=docker/dockerfile:1
# CPU image of noiseda: a cargo-chef dependency layer (rebuilt only when Cargo.lock changes),
# the release binary, and a slim non-root runtime. Build from the repository root:
#   docker build -t noiseda:cpu .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is cached until Cargo.toml / Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin noiseda \
    && strip target/release/noiseda

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/noiseda noiseda \
    && mkdir -p /var/lib/noiseda/data \
    && chown -R noiseda:noiseda /var/lib/noiseda
COPY --from=builder /src/target/release/noiseda /usr/local/bin/noiseda
USER 10001:10001
WORKDIR /var/lib/noiseda
ENV NOISEDA_LISTEN=0.0.0.0:50051 \
    NOISEDA_METRICS_LISTEN=0.0.0.0:9100 \
    NOISEDA_DATA_DIR=/var/lib/noiseda/data
VOLUME ["/var/lib/noiseda/data"]
EXPOSE 50051 9100
# The gRPC health service: the process answers and is live.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["noiseda", "health", "--server", "127.0.0.1:50051", "--timeout", "4"]
ENTRYPOINT ["noiseda"]
CMD ["serve"]
