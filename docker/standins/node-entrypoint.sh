#!/bin/sh
# Upstream node image's entrypoint semantics: a first argument that is a flag, or not a
# command, runs under node.
set -e
if [ "${1#-}" != "$1" ] || [ -z "$(command -v "$1" || true)" ]; then
  set -- node "$@"
fi
exec "$@"
