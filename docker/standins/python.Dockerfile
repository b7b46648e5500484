# Stand-in for python:<3.11.x>-slim-bookworm, built by scripts/test-compose only when that
# image cannot be pulled: Debian bookworm's own Python 3.11 (3.11.2), with upstream's paths
# (/usr/local/bin/python, python3) and its ensurepip (python3-venv), CA bundle and tzdata.
FROM debian:bookworm-slim
ARG UPSTREAM_TAG
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates netbase tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python3 \
 && ln -s /usr/bin/python3 /usr/local/bin/python
ENV LANG=C.UTF-8 \
    PYTHON_VERSION=3.11.2
LABEL org.opencontainers.image.description="Local stand-in for python:${UPSTREAM_TAG} (Debian's python3)"
CMD ["python3"]
