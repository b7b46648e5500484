# A Docker engine, a compose command and the upstream images compose.yaml names; sourced
# by scripts/test-compose after scripts/lib/bootstrap.sh (log, die, as_root, ensure_apt,
# ensure_livekit, ensure_sip, $ROOT, $CACHE_DIR).
#
# Upstream images come from their registry when it answers. When it does not (this
# project's CI machines reach no container registry), a local stand-in is built under the
# same name from Debian's packages, keeping the upstream image's entrypoint and paths:
#   debian:bookworm-slim        debootstrap (minbase), rootfs tarball cached in $CACHE_DIR
#   python:*-slim-bookworm      Debian's python3 (3.11, as upstream's 3.11 line)
#   node:*-bookworm-slim        this machine's Node.js 20 (Debian's nodejs is 18)
#   redis:7.0.15                Debian's redis-server 7.0.15, upstream's docker-entrypoint.sh semantics
#   caddy:2.6.2                 Debian's caddy 2.6.2
#   livekit/livekit-server:*    livekit-server built by `go install` (bootstrap.sh)
#   livekit/sip:*               livekit-sip built by `go build` (bootstrap.sh), upstream's runtime libraries
#   prom/prometheus:*           Debian's prometheus 2.42.0
# Stand-ins carry the label voice-appliance.standin=true.

STANDINS="$ROOT/docker/standins"
DEBIAN_SUITE="bookworm"
STANDIN_LABEL="voice-appliance.standin"

# ensure_docker: a running engine, and COMPOSE set to `docker compose` or `docker-compose`.
ensure_docker() {
  command -v dockerd >/dev/null || ensure_apt docker.io
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || ensure_apt docker-compose
  if ! docker info >/dev/null 2>&1; then
    if ! dockerd_alive; then
      as_root rm -f /var/run/docker.pid  # left by an engine that was killed
      mkdir -p "$CACHE_DIR"
      log "starting dockerd (log: $CACHE_DIR/dockerd.log)"
      # The engine outlives this run, so it must not inherit our descriptors: the caller's
      # `flock <lock file> scripts/test-compose` holds its lock on one, and an engine
      # holding it would keep every later compose test waiting.
      (
        for fd in /proc/"$BASHPID"/fd/*; do
          fd="${fd##*/}"
          [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        as_root setsid dockerd >"$CACHE_DIR/dockerd.log" 2>&1 </dev/null
      ) &
    fi
    local deadline=$((SECONDS + 90))
    until docker info >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || die "dockerd did not answer within 90 s; see $CACHE_DIR/dockerd.log"
      sleep 1
    done
  fi
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  else
    COMPOSE=(docker-compose)
  fi
}

# dockerd_alive: the engine named in /var/run/docker.pid is running (maybe still starting).
dockerd_alive() {
  local pid state
  pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
  [ -n "$pid" ] || return 1
  state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

# have_image NAME: the image is here, or its registry gave it to us.
have_image() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout 300 docker pull -q "$1" >/dev/null 2>&1
}

# compose_images: the upstream images compose.yaml runs as they are (the project's own
# images, voice-appliance/*, are built from this tree).
compose_images() {
  sed -n 's/^ *image: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' "$ROOT/compose.yaml" | grep -v '^voice-appliance/' | sort -u
}

# debian_sources: this machine's deb822 sources for Debian (main and security), reused
# inside the images so they fetch from the same mirror as the host.
debian_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources; do
    [ -f "$f" ] && { cat "$f"; return 0; }
  done
  die "no /etc/apt/sources.list.d/debian.sources: cannot tell which Debian mirror to debootstrap from"
}

# debian_rootfs: path of a cached, trimmed `debootstrap --variant=minbase` tarball.
# Keyed by suite and month, so a warm cache is reused and refreshed once a month.
debian_rootfs() {
  local key tarball mirror work
  key="debian-$DEBIAN_SUITE-minbase-$(date -u +%Y%m)"
  tarball="$CACHE_DIR/$key.tar"
  if [ ! -f "$tarball" ]; then
    ensure_apt debootstrap
    mirror="$(debian_sources | awk '$1 == "URIs:" {print $2; exit}')"
    work="$(mktemp -d)"
    log "debootstrap $DEBIAN_SUITE (minbase) for the debian:$DEBIAN_SUITE-slim stand-in"
    as_root debootstrap --variant=minbase "$DEBIAN_SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    slim_rootfs "$work/rootfs"
    find "$CACHE_DIR" -maxdepth 1 -name "debian-$DEBIAN_SUITE-minbase-*.tar" -delete
    as_root tar -C "$work/rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    as_root rm -rf "$work"
  fi
  echo "$tarball"
}

# slim_rootfs DIR: what the upstream slim images do: no docs, man pages or apt caches,
# services never started by package scripts, and this machine's Debian sources.
slim_rootfs() {
  local root="$1"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  rm -f "$root/etc/apt/sources.list" "$root/etc/hostname" "$root/etc/resolv.conf"
  debian_sources >"$root/etc/apt/sources.list.d/debian.sources"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
}

# standin_context NAME DIR: the build context of one stand-in (its Dockerfile and files).
standin_context() {
  local name="$1" dir="$2" node_bin npm_dir
  cp "$STANDINS/$name.Dockerfile" "$dir/Dockerfile"
  case "$name" in
    redis) cp "$STANDINS/redis-entrypoint.sh" "$dir/docker-entrypoint.sh" ;;
    node)
      cp "$STANDINS/node-entrypoint.sh" "$dir/docker-entrypoint.sh"
      node_bin="$(command -v node || true)"
      npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
      [ -n "$node_bin" ] && [ -f "$npm_dir/package.json" ] || die "the node stand-in needs Node.js 20 and npm on this machine"
      cp "$(readlink -f "$node_bin")" "$dir/node"
      cp -r "$npm_dir" "$dir/npm"
      ;;
    livekit)
      ensure_livekit
      cp "$(command -v livekit-server)" "$dir/livekit-server"
      ;;
    sip)
      ensure_sip
      cp "$(command -v livekit-sip)" "$dir/livekit-sip"
      ;;
  esac
}

# build_standin IMAGE: build the stand-in for one upstream image name.
build_standin() {
  local image="$1" name version dir
  case "$image" in
    debian:*)                 name=debian ;;
    python:*)                 name=python ;;
    node:*)                   name=node ;;
    redis:*)                  name=redis ;;
    caddy:*)                  name=caddy ;;
    livekit/livekit-server:*) name=livekit ;;
    livekit/sip:*)            name=sip ;;
    prom/prometheus:*)        name=prometheus ;;
    *) die "no stand-in for $image: pull it (docker pull $image) or add one in docker/standins/" ;;
  esac
  if [ "$name" = debian ]; then
    log "building stand-in $image (debootstrap rootfs)"
    docker import --change 'CMD ["bash"]' --change "LABEL $STANDIN_LABEL=true" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$(debian_rootfs)" "$image" >/dev/null || die "docker import of the Debian rootfs failed"
    return 0
  fi
  ensure_image "debian:$DEBIAN_SUITE-slim"
  version="${image##*:}"
  dir="$(mktemp -d)"
  standin_context "$name" "$dir"
  log "building stand-in $image"
  docker build -q --label "$STANDIN_LABEL=true" --build-arg "UPSTREAM_TAG=$version" \
    -t "$image" "$dir" >"$dir/build.log" 2>&1 || { tail -30 "$dir/build.log" >&2; die "stand-in $image failed to build"; }
  rm -rf "$dir"
}

# ensure_image IMAGE: present, pulled, or a stand-in built.
ensure_image() {
  have_image "$1" || build_standin "$1"
}

# ensure_upstream_images: every image compose.yaml and the Dockerfiles build from.
ensure_upstream_images() {
  local image
  for image in $(compose_images) $(dockerfile_bases); do
    ensure_image "$image"
  done
}

# dockerfile_bases: the default base images (ARG ..._IMAGE=...) of the project's Dockerfiles.
dockerfile_bases() {
  sed -n 's/^ARG [A-Z_]*_IMAGE=\(.*\)$/\1/p' "$ROOT"/docker/*.Dockerfile | sort -u
}

# is_standin IMAGE: whether the local image is one of ours.
is_standin() {
  [ "$(docker image inspect -f "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$1" 2>/dev/null)" = true ]
}
