# hubbub runtime image, the ordinary way (needs a registry for the base images):
#   docker build -t hubbub:dev .        (or `docker compose build`)
# With no registry, `scripts/image` builds the same runtime image FROM scratch
# (docker/Dockerfile.scratch): same binary path, user, ports, health check.
FROM rust:1-slim-bookworm AS build
# make: jemalloc (the allocator, see crates/hubbub/src/memory.rs) is built from source.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hubbub \
 && install -D -m 0755 target/release/hubbub /out/hubbub \
 && strip /out/hubbub

# glibc, libgcc and CA certificates, no shell: what the binary links, nothing more.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/hubbub /usr/local/bin/hubbub
USER 10001:10001
# HTTP, gossip (UDP), relay (TCP)
EXPOSE 8080 7946/udp 7947
HEALTHCHECK --interval=2s --timeout=2s --start-period=30s --retries=3 CMD ["/usr/local/bin/hubbub", "probe"]
ENTRYPOINT ["/usr/local/bin/hubbub", "serve"]
