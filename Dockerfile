# syntax=docker/dockerfile:1
# presence-bridge container image.
#   docker build -t presence-bridge .
#   docker run --rm -v $PWD/connectors/docker.toml:/etc/presence-bridge/config.toml:ro presence-bridge

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# librdkafka is compiled from source by rdkafka-sys (C toolchain; cmake for the C dependencies).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schemas ./schemas
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin presence-bridge \
    && install -D -m 0755 target/release/presence-bridge /out/presence-bridge

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 presence \
    && useradd --system --uid 10001 --gid presence --home-dir /var/lib/presence-bridge \
       --shell /usr/sbin/nologin presence \
    && mkdir -p /etc/presence-bridge /var/lib/presence-bridge \
    && chown presence:presence /var/lib/presence-bridge
COPY --from=builder /out/presence-bridge /usr/local/bin/presence-bridge
COPY schemas /usr/share/presence-bridge/schemas
USER presence:presence
WORKDIR /var/lib/presence-bridge
VOLUME ["/var/lib/presence-bridge"]
# HTTP: /metrics, /health, /ready and the PWS / Graph callbacks.
EXPOSE 9464
ENTRYPOINT ["presence-bridge"]
CMD ["run", "--config", "/etc/presence-bridge/config.toml"]
