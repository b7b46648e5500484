# Stand-in for livekit/sip:<v1.8.0>, built by scripts/test-compose only when that image cannot be
# pulled: the same release built from its Go module (scripts/lib/bootstrap.sh build_sip), at
# upstream's path and entrypoint (/bin/livekit-sip --config=/sip/config.yaml), with the runtime
# libraries upstream's image installs (Opus, opusfile, the SoX resampler, CA certificates).
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopus0 libopusfile0 libsoxr0 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY livekit-sip /bin/livekit-sip
WORKDIR /sip
LABEL org.opencontainers.image.description="Local stand-in for livekit/sip:${UPSTREAM_TAG} (go build)"
ENTRYPOINT ["livekit-sip", "--config=/sip/config.yaml"]
