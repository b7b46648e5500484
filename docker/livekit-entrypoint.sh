#!/bin/sh
# Starts the livekit-server image's /livekit-server with livekit.yaml plus a `webhook`
# section that posts room and participant events to the token server (compose.yaml mounts
# this file). livekit-server has no environment override for the list `webhook.urls`, and
# reads LIVEKIT_CONFIG instead of a --config file when it is set: the native run
# (scripts/stack.py) does the same. A webhook section already in livekit.yaml wins.
set -eu
config="$(cat /etc/livekit.yaml)"
if ! printf '%s\n' "$config" | grep -q '^webhook:'; then
  config="$config
webhook:
  api_key: ${LIVEKIT_API_KEY}
  urls:
    - http://127.0.0.1:${TOKEN_SERVER_PORT}/api/livekit/webhook"
fi
LIVEKIT_CONFIG="$config"
export LIVEKIT_CONFIG
unset LIVEKIT_API_KEY TOKEN_SERVER_PORT
exec /livekit-server "$@"
