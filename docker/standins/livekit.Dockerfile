# Stand-in for livekit/livekit-server:<v1.13.5>, built by scripts/test-compose only when that
# image cannot be pulled: the same release built from source with `go install`
# (scripts/lib/bootstrap.sh), at upstream's path and entrypoint (/livekit-server); wget and
# CA certificates as upstream's Alpine base has them.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wget \
 && rm -rf /var/lib/apt/lists/*
COPY livekit-server /livekit-server
LABEL org.opencontainers.image.description="Local stand-in for livekit/livekit-server:${UPSTREAM_TAG} (go install)"
ENTRYPOINT ["/livekit-server"]
