#!/usr/bin/env bash
# etcd-cluster.sh: a 3-member etcd cluster on 127.0.0.1, the benchmark's replicated-write peer.
#
#   etcd-cluster.sh start DIR CA_PEM CA_KEY
#       Makes, with openssl, one certificate per member (serverAuth+clientAuth, SAN
#       IP:127.0.0.1, DNS:localhost) and a client certificate (client.pem/client.key),
#       all signed by the given CA (gen-certs.sh's ca.pem/ca.key), under DIR/certs; starts
#       three etcd members (Debian etcd-server 3.4) on free ports with TLS and client
#       certificate authentication on both the client and the peer URLs, and etcd's default
#       durability (fsync of the WAL on every commit, nothing relaxed); waits (bounded) until
#       every member answers `etcdctl endpoint health`. Prints the client endpoints on
#       stdout as HOST:PORT,HOST:PORT,HOST:PORT (also written to DIR/endpoints). Member
#       data and logs: DIR/m<i>/, DIR/m<i>.log; pids: DIR/m<i>.pid.
#   etcd-cluster.sh stop DIR
#       SIGTERM to the members this script started under DIR (by their pid files), SIGKILL
#       after 10 s, then removes the pid files.
#
# Environment: ETCD_START_TIMEOUT (seconds, default 60).
set -euo pipefail

die() {
    echo "etcd-cluster: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

stop_cluster() { # DIR
    local dir=$1 pid i k
    for i in 1 2 3; do
        [ -f "$dir/m$i.pid" ] || continue
        pid=$(cat "$dir/m$i.pid")
        # Only a pid that still runs etcd: after a reboot or reuse it may be someone else's.
        if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = etcd ]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for i in 1 2 3; do
        [ -f "$dir/m$i.pid" ] || continue
        pid=$(cat "$dir/m$i.pid")
        for ((k = 0; k < 100; k++)); do
            [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = etcd ] || break
            sleep 0.1
        done
        if [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = etcd ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/m$i.pid"
    done
}

free_ports() { # N -> N distinct free ports on 127.0.0.1, one per line
    /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

make_cert() { # CERTS NAME CA_PEM CA_KEY -> CERTS/NAME.pem, CERTS/NAME.key
    local certs=$1 name=$2 ca=$3 cakey=$4
    local ext="$certs/$name.ext"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$certs/$name.key" -subj "/CN=etcd-$name" -out "$certs/$name.csr" 2>/dev/null ||
        die "openssl req for $name failed"
    openssl x509 -req -in "$certs/$name.csr" -CA "$ca" -CAkey "$cakey" -CAcreateserial \
        -CAserial "$certs/ca.srl" -days 30 -sha256 -extfile "$ext" \
        -out "$certs/$name.pem" 2>/dev/null || die "signing the certificate of $name failed"
    rm -f "$certs/$name.csr" "$ext"
}

start_cluster() { # DIR CA_PEM CA_KEY
    local dir=$1 ca=$2 cakey=$3 i
    command -v etcd >/dev/null || die "etcd not found (apt-get install etcd-server)"
    command -v etcdctl >/dev/null || die "etcdctl not found (apt-get install etcd-client)"
    [ -r "$ca" ] && [ -r "$cakey" ] || die "cannot read the CA $ca / $cakey"
    mkdir -p "$dir/certs"
    dir=$(cd "$dir" && pwd)
    ca=$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")
    for i in 1 2 3; do
        [ ! -f "$dir/m$i.pid" ] || die "$dir/m$i.pid exists: stop the cluster there first"
    done
    (
        umask 077
        for n in m1 m2 m3 client; do
            make_cert "$dir/certs" "$n" "$ca" "$cakey"
        done
    )
    mapfile -t ports < <(free_ports 6)
    [ ${#ports[@]} -eq 6 ] || die "could not pick free ports"
    local initial="" endpoints="" urls=""
    for i in 1 2 3; do
        initial+="${initial:+,}m$i=https://127.0.0.1:${ports[$((2 * i - 1))]}"
        endpoints+="${endpoints:+,}127.0.0.1:${ports[$((2 * i - 2))]}"
        urls+="${urls:+,}https://127.0.0.1:${ports[$((2 * i - 2))]}"
    done
    # Any failure or signal from here on stops what was started.
    trap 'stop_cluster "$dir"' EXIT
    trap 'exit 130' INT TERM
    for i in 1 2 3; do
        local cport=${ports[$((2 * i - 2))]} pport=${ports[$((2 * i - 1))]}
        local c="$dir/certs/m$i"
        rm -rf "$dir/m$i"
        setsid etcd --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "https://127.0.0.1:$cport" \
            --advertise-client-urls "https://127.0.0.1:$cport" \
            --listen-peer-urls "https://127.0.0.1:$pport" \
            --initial-advertise-peer-urls "https://127.0.0.1:$pport" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token "mhsm-bench-$$" \
            --cert-file "$c.pem" --key-file "$c.key" --trusted-ca-file "$ca" \
            --client-cert-auth \
            --peer-cert-file "$c.pem" --peer-key-file "$c.key" --peer-trusted-ca-file "$ca" \
            --peer-client-cert-auth \
            --logger zap --log-level warn \
            </dev/null >"$dir/m$i.log" 2>&1 &
        echo $! >"$dir/m$i.pid"
    done
    local timeout=${ETCD_START_TIMEOUT:-60} t0=$SECONDS
    while :; do
        if etcdctl --endpoints "$urls" --cacert "$ca" --cert "$dir/certs/client.pem" \
            --key "$dir/certs/client.key" --dial-timeout 2s --command-timeout 3s \
            endpoint health >/dev/null 2>&1; then
            break
        fi
        for i in 1 2 3; do
            kill -0 "$(cat "$dir/m$i.pid")" 2>/dev/null || {
                tail -n 20 "$dir/m$i.log" >&2
                die "member m$i exited during start-up (log $dir/m$i.log)"
            }
        done
        if ((SECONDS - t0 >= timeout)); then
            tail -n 20 "$dir/m1.log" >&2
            die "cluster not healthy within ${timeout}s (logs $dir/m<i>.log)"
        fi
        sleep 0.3
    done
    trap - EXIT INT TERM
    echo "$endpoints" >"$dir/endpoints"
    echo "$endpoints"
}

case "${1:-}" in
start)
    [ $# -eq 4 ] || usage
    start_cluster "$2" "$3" "$4"
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || die "no directory $2"
    stop_cluster "$2"
    ;;
*)
    usage
    ;;
esac
