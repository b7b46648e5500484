# Installs what the appliance needs, idempotently; sourced by scripts/run and scripts/test.
# Everything heavy is cached outside the clone, keyed by version, under $CACHE_DIR:
#   livekit-<version>/livekit-server   built with `go install` from the Go module proxy
#   livekit-sip-<version>/livekit-sip  built from its module with `go build` (telephony only)
#   venv-<lock hash>-pyc/               the Python environment from requirements.lock, compiled
#   uv-<version>/                       the installer used to build that environment
#   helm-<version>/helm, kubeconform-<version>/kubeconform   `go install`ed (the chart's checks)
#   k8s-schemas-<version>/              kubeconform's strict JSON schemas, generated from the
#                                       OpenAPI document inside the k8s.io/kubernetes module
# apt packages are installed system-wide; npm packages come from ~/.npm's cache.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${APPLIANCE_CACHE_DIR:-$HOME/.cache/voice-appliance}"
LIVEKIT_VERSION="v1.13.5"   # a tag whose go.mod has no replace directive, so `go install` works
SIP_VERSION="v1.8.0"        # the newest livekit-sip tag the Go module proxy serves; same psrpc as LIVEKIT_VERSION
UV_VERSION="0.13.9"
HELM_VERSION="v3.19.0"
KUBECONFORM_VERSION="v0.7.0"
KUBERNETES_VERSION="v1.34.4"   # the cluster version the chart is validated against
PYTHON="${APPLIANCE_PYTHON:-python3}"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt PKG...: install the Debian packages that are missing.
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  # Several runs (tests, helpers) may install at once: wait for dpkg's lock instead of failing.
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# with_cache_lock NAME CMD...: run CMD holding $CACHE_DIR/NAME.lock, so that several runs
# (parallel test sessions, CI and a developer) build one cache entry once, not over each other.
with_cache_lock() {
  local name="$1"; shift
  mkdir -p "$CACHE_DIR"
  (flock 9 && "$@") 9>"$CACHE_DIR/$name.lock"
}

# ensure_livekit: livekit-server on PATH (built once per version).
ensure_livekit() {
  local dir="$CACHE_DIR/livekit-$LIVEKIT_VERSION"
  [ -x "$dir/livekit-server" ] || with_cache_lock "livekit-$LIVEKIT_VERSION" build_livekit "$dir"
  export PATH="$dir:$PATH"
}

build_livekit() {
  local dir="$1"
  if [ ! -x "$dir/livekit-server" ]; then
    command -v go >/dev/null || die "Go is needed to build livekit-server (https://go.dev/doc/install)"
    log "building livekit-server $LIVEKIT_VERSION with go install (a few minutes, once)"
    mkdir -p "$dir"
    GOBIN="$dir" CGO_ENABLED=0 go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_VERSION" \
      || die "go install livekit-server failed"
    mv "$dir/server" "$dir/livekit-server"
  fi
}

# setting NAME: a setting's value as the native run sees it: the environment, else .env,
# else .env.example (scripts/stack.py's precedence).
setting() {
  local name="$1" file value
  if [ -n "${!name:-}" ]; then printf '%s\n' "${!name}"; return 0; fi
  for file in "$ROOT/.env" "$ROOT/.env.example"; do
    [ -f "$file" ] || continue
    value="$(sed -n "s/^[[:space:]]*$name[[:space:]]*=[[:space:]]*//p" "$file" | tail -n 1 | tr -d "\"'")"
    if [ -n "$value" ]; then printf '%s\n' "$value"; return 0; fi
  done
}

# ensure_telephony: livekit-sip when SIP_ENABLED is true (a run without phone calls skips the build).
ensure_telephony() {
  case "$(setting SIP_ENABLED | tr '[:upper:]' '[:lower:]')" in
    1|true|yes|on) ensure_sip ;;
  esac
}

# ensure_sip: livekit-sip on PATH (built once per version; only telephony needs it).
ensure_sip() {
  local dir="$CACHE_DIR/livekit-sip-$SIP_VERSION"
  ensure_apt libopus0 libopusfile0 libsoxr0
  [ -x "$dir/livekit-sip" ] || with_cache_lock "livekit-sip-$SIP_VERSION" build_sip "$dir"
  export PATH="$dir:$PATH"
}

# build_sip DIR: `go install` refuses livekit-sip (its go.mod has replace directives, and the
# module proxy does not list its versions), so the tagged module is downloaded and built
# where it lies. cgo: it links Opus and the SoX resampler (headers to build, libraries to run).
build_sip() {
  local dir="$1" src
  if [ ! -x "$dir/livekit-sip" ]; then
    command -v go >/dev/null || die "Go is needed to build livekit-sip (https://go.dev/doc/install)"
    ensure_apt gcc pkg-config libopus-dev libopusfile-dev libsoxr-dev
    log "building livekit-sip $SIP_VERSION with go build (a few minutes, once)"
    go mod download "github.com/livekit/sip@$SIP_VERSION" || die "go mod download livekit-sip failed"
    src="$(go env GOMODCACHE)/github.com/livekit/sip@$SIP_VERSION"
    mkdir -p "$dir"
    CGO_ENABLED=1 go build -C "$src" -ldflags "-X github.com/livekit/sip/version.Version=${SIP_VERSION#v}" \
      -o "$dir/livekit-sip.tmp" ./cmd/livekit-sip || die "building livekit-sip failed"
    mv "$dir/livekit-sip.tmp" "$dir/livekit-sip"
  fi
}

# ensure_k8s_tools: helm and kubeconform on PATH, and K8S_SCHEMAS (kubeconform's strict
# schemas for KUBERNETES_VERSION) exported; each built once per version. Needs ensure_venv.
ensure_k8s_tools() {
  local helm_dir="$CACHE_DIR/helm-$HELM_VERSION" kc_dir="$CACHE_DIR/kubeconform-$KUBECONFORM_VERSION"
  local schemas="$CACHE_DIR/k8s-schemas-$KUBERNETES_VERSION"
  [ -x "$helm_dir/helm" ] || with_cache_lock "helm-$HELM_VERSION" build_go_tool "$helm_dir" helm \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  [ -x "$kc_dir/kubeconform" ] || with_cache_lock "kubeconform-$KUBECONFORM_VERSION" build_go_tool "$kc_dir" \
    kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  [ -f "$schemas/.complete" ] || with_cache_lock "k8s-schemas-$KUBERNETES_VERSION" build_k8s_schemas "$schemas"
  export PATH="$helm_dir:$kc_dir:$PATH"
  export K8S_SCHEMAS="$schemas" KUBERNETES_VERSION
}

# build_go_tool DIR NAME MODULE@VERSION [go install flags]: DIR/NAME built with `go install`.
build_go_tool() {
  local dir="$1" name="$2" module="$3"; shift 3
  [ -x "$dir/$name" ] && return 0
  command -v go >/dev/null || die "Go is needed to build $name (https://go.dev/doc/install)"
  log "building $name ($module) with go install (a few minutes, once)"
  mkdir -p "$dir"
  GOBIN="$dir" CGO_ENABLED=0 go install -trimpath "$@" "$module" || die "go install $module failed"
}

build_k8s_schemas() {
  local dir="$1" spec
  [ -f "$dir/.complete" ] && return 0
  log "generating Kubernetes $KUBERNETES_VERSION JSON schemas from the k8s.io/kubernetes module's OpenAPI document"
  spec="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
    || die "go mod download k8s.io/kubernetes@$KUBERNETES_VERSION failed"
  rm -rf "$dir"
  python "$ROOT/scripts/k8s_schemas.py" "$spec/api/openapi-spec/swagger.json" "$dir" || die "generating the schemas failed"
  touch "$dir/.complete"
}

# ensure_venv: the Python environment from requirements.lock, activated on PATH.
ensure_venv() {
  local lock_hash uv_dir venv
  lock_hash="$(sha256sum "$ROOT/requirements.lock" | cut -c1-12)"
  venv="$CACHE_DIR/venv-$lock_hash-pyc"
  uv_dir="$CACHE_DIR/uv-$UV_VERSION"
  [ -f "$venv/.complete" ] || with_cache_lock "venv-$lock_hash" build_venv "$venv" "$uv_dir"
  export VIRTUAL_ENV="$venv"
  export PATH="$venv/bin:$PATH"
}

build_venv() {
  local venv="$1" uv_dir="$2"
  if [ ! -f "$venv/.complete" ]; then
    if [ ! -x "$uv_dir/bin/uv" ]; then
      log "installing uv $UV_VERSION"
      "$PYTHON" -m venv "$uv_dir" && "$uv_dir/bin/pip" install -q "uv==$UV_VERSION" || die "could not install uv"
    fi
    log "creating the Python environment from requirements.lock"
    rm -rf "$venv"
    "$uv_dir/bin/uv" venv -q --python "$PYTHON" "$venv" || die "could not create $venv"
    # --compile-bytecode: every process (each agent worker, job process and test stack) then
    # loads .pyc files instead of compiling its imports again, also where the environment
    # says PYTHONDONTWRITEBYTECODE (the images do the same with UV_COMPILE_BYTECODE).
    "$uv_dir/bin/uv" pip sync -q --compile-bytecode --python "$venv/bin/python" "$ROOT/requirements.lock" \
      || die "could not install requirements.lock"
    touch "$venv/.complete"
  fi
}

# ensure_web: web/dist built from web/package-lock.json.
ensure_web() {
  command -v npm >/dev/null || die "Node.js and npm are needed to build the web client"
  local stamp="$ROOT/web/node_modules/.lock-hash" lock_hash
  lock_hash="$(sha256sum "$ROOT/web/package-lock.json" | cut -c1-12)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
    log "installing web dependencies (npm ci)"
    (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed"
    echo "$lock_hash" > "$stamp"
  fi
  (cd "$ROOT/web" && npm run -s build >/dev/null) || die "building the web client failed"
}

# The appliance's own runtime needs (native run).
ensure_runtime() {
  ensure_apt redis-server caddy ca-certificates
  ensure_livekit
  ensure_telephony
  ensure_venv
  ensure_web
}
