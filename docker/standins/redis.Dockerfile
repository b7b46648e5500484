# Stand-in for redis:<7.0.15>, built by scripts/test-compose only when that image cannot be
# pulled: Debian bookworm's redis-server 7.0.15 with upstream's layout: user redis (uid
# 999), /data as working directory and volume, and docker-entrypoint.sh, which drops root
# for `redis-server` with gosu.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --no-create-home redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server gosu \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
LABEL org.opencontainers.image.description="Local stand-in for redis:${UPSTREAM_TAG} (Debian's redis-server)"
VOLUME /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
