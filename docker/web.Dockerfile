# The front door: Caddy serving the web client (built here from web/package-lock.json) over
# HTTPS, and proxying the token API (/api/*) and LiveKit signalling (/rtc*) on the same
# origin. Caddy runs as an unprivileged user; the image's cap_net_bind_service file
# capability lets it bind 80 and 443.
# Extra CA certificates (certs/*.crt, certs/*.pem) are trusted by npm at build time.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG CADDY_IMAGE=caddy:2.6.2

FROM ${NODE_IMAGE} AS build
COPY certs/ /tmp/extra-certs/
RUN cat /tmp/extra-certs/*.crt /tmp/extra-certs/*.pem > /tmp/extra-ca.pem 2>/dev/null || true
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN if [ -s /tmp/extra-ca.pem ]; then export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi \
 && npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run -s build && test -f dist/index.html
# Caddy's state directories, owned by its unprivileged user. The base image declares /data
# and /config as volumes, and a RUN step's changes under a volume are discarded: COPY them.
RUN mkdir -p /caddy-dirs/data/caddy /caddy-dirs/config/caddy

FROM ${CADDY_IMAGE}
COPY docker/Caddyfile docker/front-door.caddy /etc/caddy/
COPY --from=build /web/dist /srv
COPY --from=build --chown=10001:10001 /caddy-dirs/data /data
COPY --from=build --chown=10001:10001 /caddy-dirs/config /config
ENV PUBLIC_HOST=localhost \
    HTTPS_PORT=443 \
    HTTP_PORT=80 \
    WEB_HEALTH_PORT=8079 \
    TOKEN_SERVER_UPSTREAM=token-server:8090 \
    LIVEKIT_UPSTREAM=livekit:7880
USER 10001:10001
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD wget -q -O /dev/null "http://127.0.0.1:${WEB_HEALTH_PORT}/healthz" || exit 1
