#!/usr/bin/env bash
# local-cluster.sh: a local mhsm cluster of N nodes (default 3) on 127.0.0.1.
#
#   deploy/local-cluster.sh up DIR [--nodes N] [--base-api-port P] [--base-raft-port Q]
#       Generates the certificates (deploy/gen-certs.sh DIR/certs), writes
#       DIR/nodeI/mhsmd.ini for I = 1..N (API port P+I-1, raft port Q+I-1, raft id I,
#       certificate certs/nodeI.pem, operators = spiffe://mhsm/operator, administrators =
#       spiffe://mhsm/admin (audit log in DIR/nodeI/data/audit), every node
#       listing the same N members), starts every node that is not running in the
#       background (DIR/nodeI/mhsmd.log, DIR/nodeI/mhsmd.pid, data in DIR/nodeI/data)
#       and waits (at most MH_CLUSTER_WAIT seconds, default 60) until each logs "ready".
#       On failure it prints the tail of every log and exits 1. Defaults: N=3 (1..5:
#       gen-certs.sh makes node1..node5), P=8443, Q=9443. Running nodes are left alone;
#       the options must match the ones DIR was first set up with (DIR/cluster.env).
#   deploy/local-cluster.sh down DIR
#       SIGTERM to every node (each drains and exits), kill -9 after 30 s.
#   deploy/local-cluster.sh status DIR
#       Which nodes run, with their ports. Exit 0 when all run, 1 otherwise.
#
# Builds nothing: mhsmd comes from MH_BUILD_DIR (default <repo>/build). A fresh cluster
# is not activated: `mhsm security-domain download` on any node does that (see
# scripts/run.sh, which uses this script).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${MH_BUILD_DIR:-$ROOT/build}
MHSMD=$BUILD/mhsmd
WAIT_S=${MH_CLUSTER_WAIT:-60}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
    printf 'local-cluster: %s\n' "$*" >&2
    exit 1
}

usage_die() {
    printf 'local-cluster: %s (try --help)\n' "$*" >&2
    exit 2
}

is_uint() {
    [[ "$1" =~ ^[1-9][0-9]{0,4}$ ]]
}

node_pid() { # i: pid of the running mhsmd of node i, or nothing
    local f=$DIR/node$1/mhsmd.pid pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && grep -q mhsmd "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
    fi
}

port_busy() { # port: something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

load_env() { # reads DIR/cluster.env into NODES API_BASE RAFT_BASE (returns 1 if absent)
    [ -s "$DIR/cluster.env" ] || return 1
    local k v
    while IFS='=' read -r k v; do
        case "$k" in
        nodes) NODES=$v ;;
        base_api_port) API_BASE=$v ;;
        base_raft_port) RAFT_BASE=$v ;;
        *) ;;
        esac
    done <"$DIR/cluster.env"
    is_uint "${NODES:-}" && is_uint "${API_BASE:-}" && is_uint "${RAFT_BASE:-}" ||
        die "$DIR/cluster.env is damaged; run 'down' and remove $DIR"
}

write_config() { # i members
    local i=$1 members=$2
    mkdir -p "$DIR/node$i/data"
    cat >"$DIR/node$i/mhsmd.ini.tmp" <<EOF
; written by deploy/local-cluster.sh; every option is documented in deploy/mhsmd.example.ini
[node]
name = mhsm-local
data_dir = $DIR/node$i/data
log_level = info
[api]
listen = 127.0.0.1:$((API_BASE + i - 1))
cert = $DIR/certs/node$i.pem
key = $DIR/certs/node$i.key
client_ca = $DIR/certs/ca.pem
[raft]
id = $i
address = 127.0.0.1:$((RAFT_BASE + i - 1))
members = $members
election_timeout_ms = 1000
heartbeat_ms = 100
[cluster]
operators = spiffe://mhsm/operator
[rbac]
administrators = spiffe://mhsm/admin
EOF
    mv -f "$DIR/node$i/mhsmd.ini.tmp" "$DIR/node$i/mhsmd.ini"
}

log_tails() {
    local i
    for i in $(seq 1 "$NODES"); do
        printf '\n--- %s (last 25 lines) ---\n' "$DIR/node$i/mhsmd.log" >&2
        tail -n 25 "$DIR/node$i/mhsmd.log" >&2 2>/dev/null || echo "(no log)" >&2
    done
}

cmd_up() {
    local i pid
    if load_env; then
        [ "$NODES" = "$OPT_NODES" ] && [ "$API_BASE" = "$OPT_API" ] &&
            [ "$RAFT_BASE" = "$OPT_RAFT" ] ||
            die "$DIR was set up with --nodes $NODES --base-api-port $API_BASE" \
                "--base-raft-port $RAFT_BASE; use the same options, or 'down' and remove $DIR"
    else
        NODES=$OPT_NODES API_BASE=$OPT_API RAFT_BASE=$OPT_RAFT
    fi
    [ "$NODES" -ge 1 ] && [ "$NODES" -le 5 ] || usage_die "--nodes must be 1..5"
    [ $((API_BASE + NODES - 1)) -le 65535 ] && [ $((RAFT_BASE + NODES - 1)) -le 65535 ] ||
        usage_die "ports beyond 65535"
    if [ "$API_BASE" -le "$((RAFT_BASE + NODES - 1))" ] &&
        [ "$RAFT_BASE" -le "$((API_BASE + NODES - 1))" ]; then
        usage_die "the API ports $API_BASE.. and raft ports $RAFT_BASE.. overlap"
    fi
    [ -x "$MHSMD" ] || die "$MHSMD not found: build first (cmake --build $BUILD) or set MH_BUILD_DIR"

    mkdir -p "$DIR"
    "$HERE/gen-certs.sh" "$DIR/certs" >/dev/null
    printf 'nodes=%s\nbase_api_port=%s\nbase_raft_port=%s\n' "$NODES" "$API_BASE" "$RAFT_BASE" \
        >"$DIR/cluster.env"

    local members=""
    for i in $(seq 1 "$NODES"); do
        members+="${members:+, }$i@127.0.0.1:$((RAFT_BASE + i - 1))"
    done

    # Every port first: a half-started cluster helps nobody.
    local starting=() busy=""
    for i in $(seq 1 "$NODES"); do
        pid=$(node_pid "$i")
        if [ -n "$pid" ]; then
            echo "node$i: already running (pid $pid, API 127.0.0.1:$((API_BASE + i - 1)))"
            continue
        fi
        local p
        for p in $((API_BASE + i - 1)) $((RAFT_BASE + i - 1)); do
            if port_busy "$p"; then
                busy+=" 127.0.0.1:$p (node$i)"
            fi
        done
        starting+=("$i")
    done
    [ -z "$busy" ] || die "ports in use by another process:$busy; stop it, or choose" \
        "--base-api-port/--base-raft-port (and a new DIR)"

    declare -A log_offset=()
    for i in "${starting[@]}"; do
        write_config "$i" "$members"
        local log=$DIR/node$i/mhsmd.log
        touch "$log"
        log_offset[$i]=$(stat -c %s "$log")
        setsid "$MHSMD" --config "$DIR/node$i/mhsmd.ini" </dev/null >>"$log" 2>&1 &
        echo $! >"$DIR/node$i/mhsmd.pid"
        echo "node$i: started pid $! (API 127.0.0.1:$((API_BASE + i - 1)), raft" \
            "127.0.0.1:$((RAFT_BASE + i - 1)), log $log)"
    done
    [ ${#starting[@]} -gt 0 ] || return 0

    # Bounded wait for "ready" in the part of each log this start wrote.
    local deadline=$((SECONDS + WAIT_S)) waiting
    while :; do
        waiting=()
        for i in "${starting[@]}"; do
            if [ -z "$(node_pid "$i")" ]; then
                log_tails
                die "node$i exited during start; see $DIR/node$i/mhsmd.log"
            fi
            if ! tail -c +$((log_offset[$i] + 1)) "$DIR/node$i/mhsmd.log" |
                grep -q 'comp=node ready'; then
                waiting+=("$i")
            fi
        done
        [ ${#waiting[@]} -gt 0 ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tails
            die "not ready within ${WAIT_S} s: node${waiting[*]}"
        fi
        sleep 0.3
    done
    echo "cluster ready: $NODES node(s), API 127.0.0.1:$API_BASE..$((API_BASE + NODES - 1))"
}

cmd_down() {
    load_env || {
        echo "no cluster in $DIR"
        return 0
    }
    local i pid pids=()
    for i in $(seq 1 "$NODES"); do
        pid=$(node_pid "$i")
        if [ -z "$pid" ]; then
            echo "node$i: not running"
            rm -f "$DIR/node$i/mhsmd.pid"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        echo "node$i: SIGTERM to pid $pid"
        pids+=("$i:$pid")
    done
    local deadline=$((SECONDS + 30)) entry alive
    while :; do
        alive=0
        for entry in "${pids[@]}"; do
            kill -0 "${entry#*:}" 2>/dev/null && alive=1
        done
        [ "$alive" = 1 ] && [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    for entry in "${pids[@]}"; do
        i=${entry%%:*}
        pid=${entry#*:}
        if kill -0 "$pid" 2>/dev/null; then
            echo "node$i: still running after 30 s; kill -9 $pid"
            kill -KILL "$pid" 2>/dev/null || true
        else
            echo "node$i: stopped"
        fi
        rm -f "$DIR/node$i/mhsmd.pid"
    done
}

cmd_status() {
    load_env || {
        echo "no cluster in $DIR"
        return 1
    }
    local i pid rc=0
    for i in $(seq 1 "$NODES"); do
        pid=$(node_pid "$i")
        if [ -n "$pid" ]; then
            echo "node$i: running (pid $pid, API 127.0.0.1:$((API_BASE + i - 1)), raft" \
                "127.0.0.1:$((RAFT_BASE + i - 1)))"
        else
            echo "node$i: stopped"
            rc=1
        fi
    done
    return $rc
}

case "${1:-}" in
-h | --help | help)
    usage
    exit 0
    ;;
up | down | status) CMD=$1 ;;
"") usage_die "missing command: up, down or status" ;;
*) usage_die "unknown command '$1'" ;;
esac
shift
[ $# -ge 1 ] || usage_die "missing DIR"
DIR=$1
shift
OPT_NODES=3 OPT_API=8443 OPT_RAFT=9443
while [ $# -gt 0 ]; do
    [ "$CMD" = up ] || usage_die "'$CMD' takes no options"
    case "$1" in
    --nodes | --base-api-port | --base-raft-port)
        [ $# -ge 2 ] && is_uint "$2" || usage_die "$1 needs a number"
        case "$1" in
        --nodes) OPT_NODES=$2 ;;
        --base-api-port) OPT_API=$2 ;;
        *) OPT_RAFT=$2 ;;
        esac
        shift 2
        ;;
    *) usage_die "unknown option '$1'" ;;
    esac
done
if [ "$CMD" = up ]; then
    mkdir -p "$DIR"
fi
[ -d "$DIR" ] || die "$DIR: no such directory"
DIR=$(cd "$DIR" && pwd)
NODES=0 API_BASE=0 RAFT_BASE=0
"cmd_$CMD"
