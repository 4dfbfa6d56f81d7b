#!/usr/bin/env bash
# run.sh: install, build, and run a local mhsm node, then use it.
#
#   ./scripts/run.sh          install packages, build (build/, RelWithDebInfo), generate
#                             certificates (run/certs), start mhsmd in the background on
#                             127.0.0.1 (port 8443, or the next free one), activate it
#                             with freshly generated custodian certificates (security
#                             domain file run/sd.json), create the key `first-key`
#                             (EC-HSM P-256), sign a SHA-256 digest with it and verify.
#                             Prints every step and how to use the CLI against the node.
#   ./scripts/run.sh stop     stop the node (SIGTERM; it drains and exits)
#   ./scripts/run.sh bench    build, then run the crypto benchmark (crypto-bench)
#
# Idempotent: a running node is reused, an active node is not activated again, an
# existing key is not created again. Everything lives in ./run/ (delete it, after
# `stop`, to start from scratch). Node state: run/node1/ (data), run/node1.ini
# (config), run/node1.log (log), run/node1.pid. Environment: MH_RUN_DIR and
# MH_BUILD_DIR replace ./run and ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=${MH_RUN_DIR:-$ROOT/run}       # override for tests: where certs, state and logs go
BUILD=${MH_BUILD_DIR:-$ROOT/build} # override for tests: an existing build directory
MHSM=$BUILD/mhsm
MHSMD=$BUILD/mhsmd
PY=/usr/bin/python3
NODES=(1) # issue 4: (1 2 3), each with its own port, raft id and data directory

show_path() { # a path, relative to the repository when inside it
    case "$1" in
    "$ROOT"/*) echo "${1#"$ROOT"/}" ;;
    *) echo "$1" ;;
    esac
}

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

node_pid() { # n: pid of a running mhsmd for node n, or nothing
    local f=$RUN/node$1.pid
    [ -s "$f" ] || return 0
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && grep -q mhsmd "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
    fi
}

stop_nodes() {
    local n pid
    for n in "${NODES[@]}"; do
        pid=$(node_pid "$n")
        if [ -z "$pid" ]; then
            echo "node$n: not running"
            rm -f "$RUN/node$n.pid"
            continue
        fi
        echo "node$n: SIGTERM to pid $pid"
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            die "node$n (pid $pid) did not exit within 30 s; see $RUN/node$n.log"
        fi
        rm -f "$RUN/node$n.pid"
        echo "node$n: stopped"
    done
}

build() {
    step "install packages (scripts/install-deps.sh)"
    ./scripts/install-deps.sh
    step "build (cmake, $BUILD, RelWithDebInfo)"
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)"
}

case "${1:-}" in
stop)
    stop_nodes
    exit 0
    ;;
bench)
    build
    shift
    exec "$BUILD/crypto-bench" "$@"
    ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
"") ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

port_busy() { # port: something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port_from() { # first port >= $1 nobody listens on (and not in $2, a list)
    local p=$1
    while port_busy "$p" || [[ " ${2:-} " == *" $p "* ]]; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 100)) ] || die "no free port in $1..$((p - 1))"
    done
    echo "$p"
}

json_get() { # key: print a top-level (or "a.b") field of the JSON on stdin
    "$PY" -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v=v[k]
print(v if not isinstance(v,bool) else str(v).lower())' "$1"
}

write_config() { # n api_port raft_port
    local n=$1
    cat >"$RUN/node$n.ini" <<EOF
; written by scripts/run.sh; every option is documented in deploy/mhsmd.example.ini
[node]
name = mhsm-local
data_dir = $RUN/node$n
log_level = info
[api]
listen = 127.0.0.1:$2
cert = $RUN/certs/server.pem
key = $RUN/certs/server.key
client_ca = $RUN/certs/ca.pem
[raft]
id = $n
address = 127.0.0.1:$3
EOF
}

config_port() { # n: the API port of node n's existing config
    sed -n 's/^listen = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$RUN/node$1.ini"
}

start_node() { # n
    local n=$1 pid port rport
    pid=$(node_pid "$n")
    if [ -n "$pid" ]; then
        echo "node$n: already running (pid $pid, $(config_port "$n" | sed 's/^/127.0.0.1:/'))"
        return
    fi
    port=$(free_port_from $((8442 + n)))
    rport=$(free_port_from $((9442 + n)) "$port")
    write_config "$n" "$port" "$rport"
    echo "node$n: $MHSMD --config $RUN/node$n.ini (API 127.0.0.1:$port, raft 127.0.0.1:$rport)"
    echo "node$n: data $RUN/node$n, log $RUN/node$n.log"
    setsid "$MHSMD" --config "$RUN/node$n.ini" </dev/null >>"$RUN/node$n.log" 2>&1 &
    echo $! >"$RUN/node$n.pid"
}

cli_env() { # n: export the CLI's environment for node n
    export MHSM_ENDPOINT=127.0.0.1:$(config_port "$1")
    export MHSM_CA=$RUN/certs/ca.pem
    export MHSM_CERT=$RUN/certs/admin.pem
    export MHSM_KEY=$RUN/certs/admin.key
}

wait_ready() { # n: bounded wait for health SERVING
    local n=$1 pid
    cli_env "$n"
    for _ in $(seq 1 120); do
        pid=$(node_pid "$n")
        [ -n "$pid" ] || {
            tail -n 20 "$RUN/node$n.log" >&2 || true
            die "node$n exited; see $RUN/node$n.log"
        }
        if out=$("$MHSM" health --timeout 2 2>/dev/null) &&
            [ "$(printf '%s' "$out" | json_get status)" = SERVING ]; then
            echo "node$n: ready (health SERVING on $MHSM_ENDPOINT)"
            return
        fi
        sleep 0.5
    done
    tail -n 20 "$RUN/node$n.log" >&2 || true
    die "node$n not ready after 60 s; see $RUN/node$n.log"
}

build
[ -x "$MHSMD" ] && [ -x "$MHSM" ] || die "build did not produce $MHSMD and $MHSM"
mkdir -p "$RUN"

step "certificates (deploy/gen-certs.sh $RUN/certs)"
./deploy/gen-certs.sh "$RUN/certs"

step "start mhsmd"
for n in "${NODES[@]}"; do start_node "$n"; done
for n in "${NODES[@]}"; do wait_ready "$n"; done
cli_env 1

step "activate: security domain"
status=$("$MHSM" security-domain show | json_get activationStatus)
if [ "$status" = Active ]; then
    echo "already active (security domain file: $RUN/sd.json)"
else
    if [ -e "$RUN/sd.json" ]; then
        old=$RUN/sd.json.$(date +%Y%m%d%H%M%S).old
        mv "$RUN/sd.json" "$old"
        echo "moved a security domain file of an earlier node to $old"
    fi
    c=$(show_path "$RUN/certs")
    echo "\$ mhsm security-domain download --sd-wrapping-keys $c/sd1.pem $c/sd2.pem" \
        "$c/sd3.pem --sd-quorum 2 --security-domain-file $(show_path "$RUN/sd.json")"
    "$MHSM" security-domain download --sd-wrapping-keys "$RUN/certs/sd1.pem" \
        "$RUN/certs/sd2.pem" "$RUN/certs/sd3.pem" --sd-quorum 2 \
        --security-domain-file "$RUN/sd.json"
    echo "security domain written to $RUN/sd.json: any 2 of the custodian keys"
    echo "$c/sd{1,2,3}.key recover it. Keep them (and the file) apart and offline."
fi
"$MHSM" security-domain show
echo

step "key first-key (EC-HSM P-256)"
if "$MHSM" key show --name first-key >/dev/null 2>"$RUN/.err"; then
    echo "first-key exists:"
    "$MHSM" key show --name first-key
else
    grep -q NOT_FOUND "$RUN/.err" || die "key show failed: $(cat "$RUN/.err")"
    echo "\$ mhsm key create --name first-key --kty EC-HSM --curve P-256"
    "$MHSM" key create --name first-key --kty EC-HSM --curve P-256
fi
rm -f "$RUN/.err"
echo

step "sign a SHA-256 digest with first-key (ES256) and verify"
message="hello from mhsm, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
digest=$(printf '%s' "$message" | openssl dgst -sha256 -binary | base64 -w0)
echo "message: $message"
echo "digest (SHA-256, base64): $digest"
echo "\$ mhsm key sign --name first-key --algorithm ES256 --digest $digest"
sig=$("$MHSM" key sign --name first-key --algorithm ES256 --digest "$digest")
echo "$sig"
signature=$(printf '%s' "$sig" | json_get signature)
echo "\$ mhsm key verify --name first-key --algorithm ES256 --digest $digest --signature $signature"
verdict=$("$MHSM" key verify --name first-key --algorithm ES256 --digest "$digest" \
    --signature "$signature")
echo "$verdict"
[ "$(printf '%s' "$verdict" | json_get isValid)" = true ] || die "the signature did not verify"

cat <<EOF

==> done. mhsmd runs in the background (pid $(node_pid 1)), log $RUN/node1.log.

Use the CLI against it:
  export MHSM_ENDPOINT=$MHSM_ENDPOINT
  export MHSM_CA=$MHSM_CA
  export MHSM_CERT=$MHSM_CERT
  export MHSM_KEY=$MHSM_KEY
  $MHSM key list --output table
  $MHSM key create --name my-rsa --kty RSA-HSM --size 3072
  $MHSM --help

Stop it:   ./scripts/run.sh stop        (or: kill \$(cat $RUN/node1.pid))
Again:     ./scripts/run.sh             (reuses the node, its keys and its security domain)
EOF
