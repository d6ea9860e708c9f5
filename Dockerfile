# perfpilot: one image for every stage and for the synthetic agent.
#   docker build -t perfpilot .
#   docker run perfpilot run detector --bootstrap-servers kafka:9092
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
# The dependencies in a layer of their own (on stand-in sources): a change to perfpilot's
# code rebuilds perfpilot, not librdkafka and 300 crates.
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/cores.rs \
    && cargo build --release --bin perfpilot \
    && rm -rf src benches target/release/.fingerprint/perfpilot-* target/release/deps/perfpilot-* target/release/deps/libperfpilot-*
COPY schemas ./schemas
COPY src ./src
COPY benches ./benches
RUN cargo build --release --bin perfpilot

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 perfpilot
COPY --from=build /src/target/release/perfpilot /usr/local/bin/perfpilot
COPY deploy/perfpilot.toml /etc/perfpilot/perfpilot.toml
COPY deploy/healthcheck.sh /usr/local/bin/perfpilot-healthcheck
USER perfpilot
ENV PERFPILOT_CONFIG=/etc/perfpilot/perfpilot.toml
# Prometheus metrics of the stages (--metrics-addr / PERFPILOT_METRICS_ADDR 0.0.0.0:9464).
EXPOSE 9464
# A stage is healthy while it serves /metrics with every perfpilot_healthy at 1. The agent
# and one-shot verbs serve no stage metrics: their compose services disable the check.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["perfpilot-healthcheck"]
ENTRYPOINT ["perfpilot"]
CMD ["--help"]
