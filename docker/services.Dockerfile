# The appliance's Python services, one image each (compose.yaml builds both):
#   docker build -f docker/services.Dockerfile --target token-server \
#     --build-arg SERVICE=token-server --build-arg PACKAGE=token_server .
#   docker build -f docker/services.Dockerfile --target agent \
#     --build-arg SERVICE=agent --build-arg PACKAGE=voice_agent .
# Built from requirements.lock: a service gets the dependencies its pyproject.toml lists, at
# the lock's versions, and the build stops if anything outside the lock comes in or an import
# of the package finds no module (docker/check-venv.py).
# Extra CA certificates (certs/*.crt, certs/*.pem) are trusted at build time (pip, uv)
# and at run time (the agent's connection to Gemini), for networks that re-sign TLS.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS python-base
COPY certs/ /tmp/extra-certs/
RUN set -eu; \
    mkdir -p /usr/local/share/ca-certificates; \
    for pem in /tmp/extra-certs/*.crt /tmp/extra-certs/*.pem; do \
      [ -f "$pem" ] || continue; \
      name="$(basename "$pem")"; \
      cp "$pem" "/usr/local/share/ca-certificates/extra-${name%.*}.crt"; \
    done; \
    update-ca-certificates >/dev/null 2>&1; \
    rm -rf /tmp/extra-certs
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

FROM python-base AS builder
ARG UV_VERSION=0.13.9
ARG SERVICE
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NATIVE_TLS=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1
RUN python -m venv /opt/uv && /opt/uv/bin/pip install -q "uv==${UV_VERSION}"
COPY requirements.lock docker/check-venv.py /build/
COPY ${SERVICE}/pyproject.toml /build/${SERVICE}/
# The service's dependencies: its pyproject.toml's, at the versions requirements.lock pins.
RUN /opt/uv/bin/uv venv -q --python /usr/local/bin/python3 /opt/venv \
 && /opt/uv/bin/uv pip install -q --python /opt/venv/bin/python --constraint /build/requirements.lock \
      -r /build/${SERVICE}/pyproject.toml

FROM python-base AS runtime
ARG SERVICE
ARG PACKAGE
RUN groupadd --system --gid 10001 appliance \
 && useradd --system --uid 10001 --gid appliance --create-home --home-dir /home/appliance \
      --shell /usr/sbin/nologin appliance
COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/bin/appliance-healthcheck
COPY ${SERVICE}/${PACKAGE} /app/${PACKAGE}
# What the services share about calls in Redis (calls/): one copy of the formats in each image.
COPY calls/voice_calls /app/voice_calls
COPY --from=builder /build/check-venv.py /build/requirements.lock /tmp/
RUN /opt/venv/bin/python /tmp/check-venv.py /tmp/requirements.lock /app/${PACKAGE} \
 && rm /tmp/check-venv.py /tmp/requirements.lock \
 && find /app -name __pycache__ -prune -exec rm -rf {} + \
 && chmod 755 /usr/local/bin/appliance-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app
WORKDIR /app
USER appliance

# Token server: LiveKit's standard token endpoint under gunicorn (as the Procfile runs it).
FROM runtime AS token-server
ARG TOKEN_SERVER_PORT=8090
COPY token-server/gunicorn.conf.py /app/gunicorn.conf.py
ENV TOKEN_SERVER_HOST=0.0.0.0 \
    TOKEN_SERVER_PORT=${TOKEN_SERVER_PORT}
EXPOSE ${TOKEN_SERVER_PORT}
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD appliance-healthcheck "http://127.0.0.1:${TOKEN_SERVER_PORT}/healthz"
CMD ["sh", "-c", "exec gunicorn -c /app/gunicorn.conf.py --bind \"$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT\" 'token_server:create_app()'"]

# Agent worker: healthy once LiveKit has accepted its registration (AGENT_READY_FILE), not
# merely when its health port answers; the ready file names the port the worker bound
# (AGENT_HEALTH_PORT, or any free one when that is 0). It drains live calls on SIGTERM
# (AGENT_DRAIN_TIMEOUT_S): give `docker stop` a grace period longer than that.
FROM runtime AS agent
ARG AGENT_HEALTH_PORT=8081
ENV AGENT_HEALTH_PORT=${AGENT_HEALTH_PORT} \
    AGENT_READY_FILE=/tmp/voice-agent.ready
# The metrics-targets volume's mount point (compose.yaml): a new volume takes its owner.
RUN mkdir -p /home/appliance/metrics-targets
EXPOSE ${AGENT_HEALTH_PORT}
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
  CMD appliance-healthcheck --ready-file "$AGENT_READY_FILE" "http://127.0.0.1:{health_port}/"
STOPSIGNAL SIGTERM
CMD ["python", "-m", "voice_agent", "start"]
