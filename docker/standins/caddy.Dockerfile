# Stand-in for caddy:<2.6.2>, built by scripts/test-compose only when that image cannot be
# pulled: Debian bookworm's caddy 2.6.2 at upstream's paths (/usr/bin/caddy,
# /etc/caddy/Caddyfile, /srv), its XDG directories (/config, /data) and its
# cap_net_bind_service file capability; wget as upstream's busybox has it.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN apt-get update \
 && apt-get install -y --no-install-recommends caddy ca-certificates wget libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/bin/caddy \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /config/caddy /data/caddy /etc/caddy /usr/share/caddy /srv \
 && printf ':80\n\nroot * /usr/share/caddy\nfile_server\n' > /etc/caddy/Caddyfile
ENV XDG_CONFIG_HOME=/config \
    XDG_DATA_HOME=/data
LABEL org.opencontainers.image.description="Local stand-in for caddy:${UPSTREAM_TAG} (Debian's caddy)"
VOLUME /config
VOLUME /data
EXPOSE 80 443 443/udp 2019
WORKDIR /srv
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
