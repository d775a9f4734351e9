# hubbub container image: a static-ish release build on a slim Debian base.
# Not yet exercised here (this machine kind has no Docker engine); see the cluster issue's note.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p hubbub && strip target/release/hubbub

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 hubbub
COPY --from=build /src/target/release/hubbub /usr/local/bin/hubbub
USER hubbub
# HTTP, gossip (UDP), relay (TCP)
EXPOSE 8080 7946/udp 7947
ENTRYPOINT ["hubbub", "serve"]
