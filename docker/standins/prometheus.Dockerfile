# Stand-in for prom/prometheus:<v2.42.0>, built by scripts/test-compose only when that image
# cannot be pulled: Debian bookworm's prometheus 2.42.0 with upstream's layout: /bin/prometheus
# as entrypoint, user nobody (65534), /prometheus as working directory and volume, and wget
# (upstream's busybox has one) for the health check.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus /etc/prometheus \
 && printf 'scrape_configs: []\n' >/etc/prometheus/prometheus.yml \
 && chown -R 65534:65534 /prometheus
LABEL org.opencontainers.image.description="Local stand-in for prom/prometheus:${UPSTREAM_TAG} (Debian's prometheus)"
USER 65534:65534
VOLUME /prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
