# Shared by scripts/demo, scripts/test and .ci/run: where things are cached,
# and how the broker and the Python clients are installed and started.
# Everything heavy is cached outside the clone, so a warm run takes minutes.

STRATA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA_CACHE=${STRATA_CACHE:-$HOME/.cache/strata}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$STRATA_CACHE/target}
NISSHI_VERSION=0.6.0
NISSHI_ROOT=$STRATA_CACHE/nisshi-$NISSHI_VERSION
export STRATA_NISSHI_BIN=$NISSHI_ROOT/bin/nisshi
STRATA_VENV=$STRATA_CACHE/venv

log() { printf '[strata %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Debian packages, installed only when missing.
install_apt_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing apt packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# The Kafka-compatible test broker (see ../shared/design/BROKER.md): built
# once with cargo into the cache (~25-35 min cold on 2 cores).
install_broker() {
    if [ -x "$STRATA_NISSHI_BIN" ]; then return 0; fi
    log "building the nisshi $NISSHI_VERSION broker into $NISSHI_ROOT (once; ~30 min on 2 cores)"
    CARGO_TARGET_DIR="$STRATA_CACHE/nisshi-build" \
        cargo install --locked "nisshi@$NISSHI_VERSION" --features dynostore,libsql --root "$NISSHI_ROOT"
    rm -rf "$STRATA_CACHE/nisshi-build"
}

# A venv with the Python clients, reinstalled when tests/requirements.txt changes.
install_python_clients() {
    local req="$STRATA_ROOT/tests/requirements.txt"
    local stamp="$STRATA_VENV/.requirements.sha256"
    local want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    log "installing Python clients into $STRATA_VENV"
    [ -x "$STRATA_VENV/bin/python" ] || python3 -m venv "$STRATA_VENV"
    "$STRATA_VENV/bin/pip" install -q --upgrade pip
    "$STRATA_VENV/bin/pip" install -q -r "$req"
    echo "$want" >"$stamp"
}

# start_broker PORT STORAGE_URL LOGFILE: starts nisshi on 127.0.0.1:PORT and
# waits until it accepts connections. Prints the pid. With
# STRATA_BROKER_CPUS set (a taskset list, e.g. "1"), the broker runs on
# those cores only.
start_broker() {
    local port=$1 storage=$2 logfile=$3
    local pin=()
    [ -n "${STRATA_BROKER_CPUS:-}" ] && pin=(taskset -c "$STRATA_BROKER_CPUS")
    "${pin[@]}" "$STRATA_NISSHI_BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$storage" >"$logfile" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$pid"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "the broker exited; its log:"
            cat "$logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    log "the broker did not listen on port $port within 10 s"
    return 1
}

# SIGTERM, then SIGKILL if it has not ended within 30 s (a clean stop of
# strata commits its last epoch first).
stop_process() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# The broker build runs beside Strata's own build: each leaves a core idle
# much of the time, so together they take little more than the longer one.
# Sets BROKER_INSTALL_PID (empty if already installed). Not to be called in
# $(...): the job must be a child of the calling shell for `wait`.
start_broker_install() {
    BROKER_INSTALL_PID=""
    [ -x "$STRATA_NISSHI_BIN" ] && return 0
    mkdir -p "$STRATA_CACHE"
    install_broker >"$STRATA_CACHE/nisshi-install.log" 2>&1 &
    BROKER_INSTALL_PID=$!
    log "building the broker in the background ($STRATA_CACHE/nisshi-install.log)"
}

# Waits for start_broker_install's job, if there is one.
wait_broker_install() {
    [ -z "${BROKER_INSTALL_PID:-}" ] && return 0
    if ! wait "$BROKER_INSTALL_PID"; then
        log "building the broker failed:"
        tail -50 "$STRATA_CACHE/nisshi-install.log" >&2
        return 1
    fi
}

check_prerequisites() {
    command -v cargo >/dev/null || { log "cargo is required (https://rustup.rs)"; exit 1; }
    command -v python3 >/dev/null || install_apt_packages python3 python3-venv
}

# Everything the tests and the demo need, on a brand-new machine.
setup_all() {
    check_prerequisites
    install_broker
    install_python_clients
}
