#!/bin/sh
# Starts Prometheus with deploy/prometheus/compose.yml (compose.yaml mounts both files): its
# ${NAME} placeholders are filled from this container's environment (the ports in .env), and
# livekit-sip's target file says 127.0.0.1:SIP_PROMETHEUS_PORT when SIP_ENABLED, else nothing.
# Prometheus re-reads target files when they change: the agent replicas write theirs.
set -eu
mkdir -p /prometheus/targets
case "$(printf '%s' "${SIP_ENABLED:-}" | tr 'A-Z' 'a-z')" in
  1|true|yes|on) printf '[{"targets": ["127.0.0.1:%s"]}]\n' "$SIP_PROMETHEUS_PORT" ;;
  *) printf '[]\n' ;;
esac >/prometheus/targets/sip.json
template="$(cat /etc/prometheus/compose.yml)"
eval "cat <<EOF_CONFIG
$template
EOF_CONFIG" >/prometheus/prometheus.yml
exec /bin/prometheus --config.file=/prometheus/prometheus.yml "$@"
