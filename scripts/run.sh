#!/usr/bin/env bash
# run.sh: install, build, and run a local three-node mhsm cluster, then use it.
#
#   ./scripts/run.sh          install packages, build (build/, RelWithDebInfo), start a
#                             three-node cluster on 127.0.0.1 through deploy/local-cluster.sh
#                             (API ports 8443, 8444, 8445; raft peer ports 9443, 9444, 9445;
#                             certificates in run/certs), activate it through node 1 with
#                             freshly generated custodian certificates (security domain file
#                             run/sd.json), create the key `first-key` (EC-HSM P-256) on
#                             node 1, sign a SHA-256 digest with it on node 2 and verify the
#                             signature on node 3, and show `mhsm cluster status`.
#                             Prints every step and how to use the CLI against the cluster.
#   ./scripts/run.sh stop     stop the three nodes (SIGTERM; each drains and exits)
#   ./scripts/run.sh bench    build, then run the crypto benchmark (crypto-bench)
#
# Idempotent: running nodes are reused, an active HSM is not activated again, an
# existing key is not created again. Everything lives in ./run/ (delete it, after
# `stop`, to start from scratch). Node i: run/node<i>/data (data directory),
# run/node<i>/mhsmd.ini (config), run/node<i>/mhsmd.log, run/node<i>/mhsmd.pid.
# Environment: MH_RUN_DIR and MH_BUILD_DIR replace ./run and ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=${MH_RUN_DIR:-$ROOT/run}       # override for tests: where certs, state and logs go
BUILD=${MH_BUILD_DIR:-$ROOT/build} # override for tests: an existing build directory
export MH_BUILD_DIR=$BUILD         # for deploy/local-cluster.sh
MHSM=$BUILD/mhsm
MHSMD=$BUILD/mhsmd
PY=/usr/bin/python3
NODES=(1 2 3)
API_BASE=8443
RAFT_BASE=9443

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

# Before issue 4, run/ held one node: run/node1.ini, run/node1.pid, run/node1.log and its
# data directory run/node1/. Stop that node and move it aside instead of mixing layouts.
retire_single_node() {
    [ -e "$RUN/node1.ini" ] || return 0
    local pid old
    pid=$(cat "$RUN/node1.pid" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        grep -q mhsmd "/proc/$pid/cmdline" 2>/dev/null; then
        echo "stopping the single node of an earlier run.sh (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && die "the earlier node (pid $pid) did not exit within 30 s"
    fi
    old=$RUN/single-node.$(date +%Y%m%d%H%M%S).old
    mkdir -p "$old"
    local f
    for f in node1 node1.ini node1.log node1.pid sd.json; do
        [ -e "$RUN/$f" ] && mv "$RUN/$f" "$old/"
    done
    echo "moved the single-node setup of an earlier run.sh to $old"
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
    retire_single_node
    ./deploy/local-cluster.sh down "$RUN"
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

json_get() { # key: print a top-level (or "a.b") field of the JSON on stdin
    "$PY" -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v=v[k]
print(v if not isinstance(v,bool) else str(v).lower())' "$1"
}

endpoint() { # n: the API endpoint of node n
    echo "127.0.0.1:$((API_BASE + $1 - 1))"
}

cli_env() { # n [operator]: export the CLI's environment for node n
    export MHSM_ENDPOINT
    MHSM_ENDPOINT=$(endpoint "$1")
    export MHSM_CA=$RUN/certs/ca.pem
    local who=${2:-admin}
    export MHSM_CERT=$RUN/certs/$who.pem
    export MHSM_KEY=$RUN/certs/$who.key
}

# Runs the CLI; while it fails with a retryable status (UNAVAILABLE: a follower still
# waiting for the security domain or the leader; NOT_FOUND for |2|: a node that has
# not applied the create yet), tries again, at most 60 s. Output on stdout.
mhsm_retry() { # retry-status mhsm-args...
    local retry=$1 out err rc
    shift
    err=$(mktemp "$RUN/.err.XXXXXX")
    for _ in $(seq 1 120); do
        rc=0
        out=$("$MHSM" "$@" 2>"$err") || rc=$?
        if [ "$rc" = 0 ]; then
            rm -f "$err"
            printf '%s\n' "$out"
            return 0
        fi
        if [ "$rc" != 1 ] || ! grep -Eq "^error: ($retry):" "$err"; then
            cat "$err" >&2
            rm -f "$err"
            return "$rc"
        fi
        sleep 0.5
    done
    cat "$err" >&2
    rm -f "$err"
    return 1
}

build
[ -x "$MHSMD" ] && [ -x "$MHSM" ] || die "build did not produce $MHSMD and $MHSM"
mkdir -p "$RUN"
retire_single_node

step "start three nodes (deploy/local-cluster.sh up $(show_path "$RUN"))"
echo "certificates: deploy/gen-certs.sh $(show_path "$RUN/certs") (node1..3.pem name the nodes)"
./deploy/local-cluster.sh up "$RUN" --nodes ${#NODES[@]} --base-api-port $API_BASE \
    --base-raft-port $RAFT_BASE
cli_env 1

step "activate through node 1: security domain"
status=$(mhsm_retry UNAVAILABLE security-domain show | json_get activationStatus)
if [ "$status" = Active ]; then
    echo "already active (security domain file: $RUN/sd.json)"
else
    if [ -e "$RUN/sd.json" ]; then
        old=$RUN/sd.json.$(date +%Y%m%d%H%M%S).old
        mv "$RUN/sd.json" "$old"
        echo "moved a security domain file of an earlier cluster to $old"
    fi
    c=$(show_path "$RUN/certs")
    echo "\$ mhsm --endpoint $MHSM_ENDPOINT security-domain download --sd-wrapping-keys" \
        "$c/sd1.pem $c/sd2.pem $c/sd3.pem --sd-quorum 2 --security-domain-file" \
        "$(show_path "$RUN/sd.json")"
    "$MHSM" security-domain download --sd-wrapping-keys "$RUN/certs/sd1.pem" \
        "$RUN/certs/sd2.pem" "$RUN/certs/sd3.pem" --sd-quorum 2 \
        --security-domain-file "$RUN/sd.json"
    echo "security domain written to $RUN/sd.json: any 2 of the custodian keys"
    echo "$c/sd{1,2,3}.key recover it. Keep them (and the file) apart and offline."
    echo "nodes 2 and 3 fetch the domain secret from node 1 over the peer channel."
fi
"$MHSM" security-domain show
echo

step "local RBAC: the administrator lets the app identity use keys (role assignment)"
echo "The administrator (certs/admin.pem, [rbac] administrators) manages roles and the security"
echo "domain but cannot use keys; the app identity (certs/app.pem) gets Managed HSM Crypto User."
echo "\$ mhsm whoami"
mhsm_retry UNAVAILABLE whoami --output table
assigned=$(mhsm_retry UNAVAILABLE role assignment list --assignee spiffe://mhsm/app \
    --role "Managed HSM Crypto User" --scope /)
if [ "$(printf '%s' "$assigned" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ]; then
    echo "\$ mhsm role assignment create --role \"Managed HSM Crypto User\" --assignee spiffe://mhsm/app --scope /"
    mhsm_retry UNAVAILABLE role assignment create --role "Managed HSM Crypto User" \
        --assignee spiffe://mhsm/app --scope /
else
    echo "spiffe://mhsm/app already holds Managed HSM Crypto User:"
    printf '%s\n' "$assigned"
fi
cli_env 1 app
echo

step "key first-key (EC-HSM P-256) on node 1 (app identity)"
if "$MHSM" key show --name first-key >/dev/null 2>"$RUN/.err"; then
    echo "first-key exists:"
    "$MHSM" key show --name first-key
else
    grep -Eq "NOT_FOUND|UNAVAILABLE" "$RUN/.err" || die "key show failed: $(cat "$RUN/.err")"
    echo "\$ mhsm --endpoint $MHSM_ENDPOINT key create --name first-key --kty EC-HSM --curve P-256"
    mhsm_retry UNAVAILABLE key create --name first-key --kty EC-HSM --curve P-256
fi
rm -f "$RUN/.err"
echo

step "sign a SHA-256 digest with first-key on node 2 (ES256), verify on node 3 (app identity)"
message="hello from mhsm, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
digest=$(printf '%s' "$message" | openssl dgst -sha256 -binary | base64 -w0)
echo "message: $message"
echo "digest (SHA-256, base64): $digest"
cli_env 2 app
echo "\$ mhsm --endpoint $MHSM_ENDPOINT key sign --name first-key --algorithm ES256 --digest $digest"
sig=$(mhsm_retry "UNAVAILABLE|NOT_FOUND" key sign --name first-key --algorithm ES256 \
    --digest "$digest") || die "signing on node 2 failed"
echo "$sig"
signature=$(printf '%s' "$sig" | json_get signature)
cli_env 3 app
echo "\$ mhsm --endpoint $MHSM_ENDPOINT key verify --name first-key --algorithm ES256" \
    "--digest $digest --signature $signature"
verdict=$(mhsm_retry "UNAVAILABLE|NOT_FOUND" key verify --name first-key --algorithm ES256 \
    --digest "$digest" --signature "$signature") || die "verifying on node 3 failed"
echo "$verdict"
[ "$(printf '%s' "$verdict" | json_get isValid)" = true ] || die "the signature did not verify"

step "cluster status (operator certificate, node 1)"
cli_env 1 operator
echo "\$ mhsm --cert $(show_path "$MHSM_CERT") --key $(show_path "$MHSM_KEY") cluster status --output table"
mhsm_retry UNAVAILABLE cluster status --output table || die "cluster status failed"
cli_env 1 app

cat <<EOF

==> done. Three mhsmd nodes run in the background (pids $(cat "$RUN"/node{1,2,3}/mhsmd.pid | tr '\n' ' '| sed 's/ $//')),
logs $RUN/node{1,2,3}/mhsmd.log. Any node answers: API ports $API_BASE, $((API_BASE + 1)), $((API_BASE + 2)).

Use the CLI against it (data plane, as the app identity, which holds Managed HSM Crypto User):
  export MHSM_ENDPOINT=$MHSM_ENDPOINT
  export MHSM_CA=$MHSM_CA
  export MHSM_CERT=$MHSM_CERT
  export MHSM_KEY=$MHSM_KEY
  $MHSM key list --output table
  $MHSM key create --name my-rsa --kty RSA-HSM --size 3072
  $MHSM --endpoint $(endpoint 3) key show --name my-rsa
  $MHSM --help

Roles and the audit log (the administrator identity):
  $MHSM --cert $RUN/certs/admin.pem --key $RUN/certs/admin.key role assignment list --output table
  $MHSM --cert $RUN/certs/admin.pem --key $RUN/certs/admin.key role definition list --output table
  $MHSM audit verify $RUN/node1/data/audit/audit-*.jsonl     (every request, hash-chained, signed)

The control plane needs the operator certificate:
  $MHSM --cert $RUN/certs/operator.pem --key $RUN/certs/operator.key cluster status --output table
  $MHSM --cert $RUN/certs/operator.pem --key $RUN/certs/operator.key cluster transfer

Stop it:   ./scripts/run.sh stop        (or: deploy/local-cluster.sh down $RUN)
Again:     ./scripts/run.sh             (reuses the nodes, their keys and the security domain)
EOF
