# The gateway, its load tool, the conformance runner and every plugin, from the
# release package `cargo xtask dist` makes (docs/SCALING.md, "Deployment").
#   docker build -t prism .
#   docker run -p 8980:8980 prism                  # the packaged default config
#   docker run -p 8980:8980 -v $PWD/my.toml:/etc/prism/plugins.toml prism \
#       serve --config /etc/prism/plugins.toml --listen 0.0.0.0:8980
# The default config keeps its data under /var/lib/prism/data (writable by the prism
# user); a mounted config should keep data there too (or on a mounted volume), not next
# to itself in /etc/prism.

FROM rust:1-bookworm AS build
# C libraries the plugins link: OpenSSL (kafka's TLS) and the system SQLite (sqlite).
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo xtask dist --out /dist \
 && mkdir /opt/prism \
 && tar -xzf /dist/prism-*-linux.tar.gz -C /opt/prism --strip-components=1

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/prism --create-home prism
COPY --from=build /opt/prism /opt/prism
# The packaged config keeps its data next to itself: run it from a writable copy.
RUN mkdir -p /etc/prism /var/lib/prism \
 && sed 's|plugins/libprism_|/opt/prism/plugins/libprism_|' /opt/prism/plugins.toml > /var/lib/prism/plugins.toml \
 && chown -R prism /var/lib/prism
USER prism
WORKDIR /var/lib/prism
EXPOSE 8980 9464
ENTRYPOINT ["/opt/prism/bin/prism"]
CMD ["serve", "--config", "/var/lib/prism/plugins.toml", "--listen", "0.0.0.0:8980"]
