# Multi-stage build for the demo: `docker compose up --build` builds everything here.
# Targets: token (gatehouse-token), api (the demo API), envoy (Envoy 1.40 + the filter).

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gatehouse-token -p demo-api -p wasm-trim \
 && cargo build --release --locked --target wasm32-wasip1 -p gatehouse \
 && target/release/wasm-trim filter-exports.txt target/wasm32-wasip1/release/gatehouse.wasm target/gatehouse.wasm

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home gatehouse
USER gatehouse

FROM runtime AS token
COPY --from=build /src/target/release/gatehouse-token /usr/local/bin/gatehouse-token
COPY demo/seed-users.sh demo/docker-entrypoint.sh /usr/local/bin/
ENV GATEHOUSE_DB=/data/users.db GATEHOUSE_LISTEN=0.0.0.0:8080
USER root
RUN mkdir -p /data && chown gatehouse /data
USER gatehouse
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["docker-entrypoint.sh"]

FROM runtime AS api
COPY --from=build /src/target/release/demo-api /usr/local/bin/demo-api
ENV DEMO_API_LISTEN=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["demo-api"]

FROM envoyproxy/envoy:v1.40.0 AS envoy
# envoy.yaml names the filter by this relative path, as `make demo` does from the
# repository root.
COPY --from=build /src/target/gatehouse.wasm /gatehouse/target/gatehouse.wasm
COPY demo/envoy-config.sh /usr/local/bin/
WORKDIR /gatehouse
