# perfpilot: one image for every stage and for the synthetic agent.
#   docker build -t perfpilot .
#   docker run perfpilot run detector --bootstrap-servers kafka:9092
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY schemas ./schemas
COPY src ./src
COPY benches ./benches
RUN cargo build --release --bin perfpilot

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 perfpilot
COPY --from=build /src/target/release/perfpilot /usr/local/bin/perfpilot
COPY deploy/perfpilot.toml /etc/perfpilot/perfpilot.toml
USER perfpilot
ENV PERFPILOT_CONFIG=/etc/perfpilot/perfpilot.toml
ENTRYPOINT ["perfpilot"]
CMD ["--help"]
