# Stand-in for node:<20.x>-bookworm-slim, built by scripts/test-compose only when that
# image cannot be pulled: this machine's Node.js 20 binary and npm (Debian bookworm ships
# Node.js 18), at upstream's paths (/usr/local/bin/node, /usr/local/lib/node_modules/npm),
# with upstream's `node` user (uid 1000) and entrypoint.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
LABEL org.opencontainers.image.description="Local stand-in for node:${UPSTREAM_TAG} (this machine's Node.js)"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["node"]
