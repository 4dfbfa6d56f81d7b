#!/usr/bin/env bash
# gen-certs.sh OUTDIR: generates, with the openssl CLI, every certificate a local
# mhsm deployment and its tests need. Idempotent: an item whose certificate and key
# both exist is kept as it is (delete a pair to regenerate it; delete the CA and
# every leaf to start over). Private keys are written 0600.
#
#   ca.pem ca.key                 cluster CA (EC P-256); mhsmd's [api] client_ca
#   server.pem server.key         node certificate signed by the CA, serverAuth+clientAuth,
#                                 SAN IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, DNS:localhost
#   node1.pem node1.key .. node5  node certificates (RSA-2048: a member receives the domain
#                                 secret wrapped to this key), serverAuth+clientAuth, SAN URI
#                                 spiffe://mhsm/node/<i> (the raft id peers check), IP:127.0.0.1,
#                                 IP:127.0.0.2, IP:127.0.0.3, DNS:localhost. Each node presents
#                                 its own on the API and on the raft peer channel.
#   operator.pem operator.key     client certificate, SAN URI spiffe://mhsm/operator: the
#                                 control plane (mhsm cluster ...), no data-plane role
#   admin.pem admin.key           client certificate, SAN URI spiffe://mhsm/admin
#   app.pem app.key               client certificate, SAN URI spiffe://mhsm/app
#   officer, auditor, user2,      more client certificates (.pem/.key), SAN URI
#   keyuser, custom, policy       spiffe://mhsm/<name>: identities for the RBAC tests
#                                 (they hold no role until one is assigned)
#   foreign-ca.pem foreign-ca.key a second, unrelated CA (not trusted by mhsmd)
#   foreign-node.pem/.key         node certificate for raft id 4 from the foreign CA (must
#                                 never join)
#   foreign.pem foreign.key       client certificate from the foreign CA, SAN URI
#                                 spiffe://mhsm/admin (same name, wrong issuer: must be
#                                 refused at the TLS handshake)
#   sd1.pem sd1.key .. sd3.*      security-domain custodians: self-signed RSA-2048
#                                 certificates (mhsm security-domain download
#                                 --sd-wrapping-keys sd1.pem sd2.pem sd3.pem)
#
# Environment: MH_CERT_DAYS (leaf validity, default 825), MH_CA_DAYS (default 3650).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac
if [ $# -ne 1 ]; then
    usage >&2
    exit 2
fi
OUT=$1
LEAF_DAYS=${MH_CERT_DAYS:-825}
CA_DAYS=${MH_CA_DAYS:-3650}
command -v openssl >/dev/null || {
    echo "gen-certs: openssl not found (apt-get install openssl)" >&2
    exit 1
}
umask 077
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "$OUT/.gen.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

have() { # name: certificate and key both present
    [ -s "$OUT/$1.pem" ] && [ -s "$OUT/$1.key" ]
}

install_pair() { # name: move the freshly made pair into place (key 0600, cert 0644)
    chmod 600 "$WORK/$1.key"
    chmod 644 "$WORK/$1.pem"
    mv -f "$WORK/$1.key" "$OUT/$1.key"
    mv -f "$WORK/$1.pem" "$OUT/$1.pem"
    echo "gen-certs: wrote $OUT/$1.pem $OUT/$1.key"
}

serial() {
    openssl rand -hex 16
}

ec_key() { # file
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
        -out "$1" 2>/dev/null
}

make_ca() { # name, common name
    local name=$1 cn=$2
    if have "$name"; then
        echo "gen-certs: keep $OUT/$name.pem"
        return
    fi
    ec_key "$WORK/$name.key"
    openssl req -new -x509 -key "$WORK/$name.key" -out "$WORK/$name.pem" -days "$CA_DAYS" \
        -set_serial "0x$(serial)" -subj "/O=mhsm/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
    install_pair "$name"
}

make_leaf() { # name, ca name, common name, extendedKeyUsage, subjectAltName[, key type ec|rsa]
    local name=$1 ca=$2 cn=$3 eku=$4 san=$5 kt=${6:-ec}
    if have "$name"; then
        echo "gen-certs: keep $OUT/$name.pem"
        return
    fi
    if [ "$kt" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/$name.key" 2>/dev/null
    else
        ec_key "$WORK/$name.key"
    fi
    openssl req -new -key "$WORK/$name.key" -out "$WORK/$name.csr" -subj "/O=mhsm/CN=$cn" 2>/dev/null
    cat >"$WORK/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature$([ "$kt" = rsa ] && echo ,keyEncipherment)
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    openssl x509 -req -in "$WORK/$name.csr" -CA "$OUT/$ca.pem" -CAkey "$OUT/$ca.key" \
        -set_serial "0x$(serial)" -days "$LEAF_DAYS" -sha256 -extfile "$WORK/$name.ext" \
        -out "$WORK/$name.pem" 2>/dev/null
    openssl verify -CAfile "$OUT/$ca.pem" "$WORK/$name.pem" >/dev/null
    install_pair "$name"
}

make_custodian() { # name: self-signed RSA-2048, the form Azure's CLI documents for SD wrapping keys
    local name=$1
    if have "$name"; then
        echo "gen-certs: keep $OUT/$name.pem"
        return
    fi
    openssl req -new -x509 -newkey rsa:2048 -nodes -keyout "$WORK/$name.key" -out "$WORK/$name.pem" \
        -days "$LEAF_DAYS" -sha256 -set_serial "0x$(serial)" \
        -subj "/O=mhsm/CN=mhsm security domain custodian $name" 2>/dev/null
    install_pair "$name"
}

CLIENTS="officer auditor user2 keyuser custom policy"

# A leaf signed by a CA that was regenerated would no longer verify: regenerate it.
for pair in "ca:server node1 node2 node3 node4 node5 operator admin app $CLIENTS" "foreign-ca:foreign foreign-node"; do
    ca=${pair%%:*}
    if ! have "$ca"; then
        for leaf in ${pair#*:}; do rm -f "$OUT/$leaf.pem" "$OUT/$leaf.key"; done
    fi
done

make_ca ca "mhsm cluster CA"
make_leaf server ca "mhsm node" "serverAuth,clientAuth" \
    "IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost"
for i in 1 2 3 4 5; do
    make_leaf "node$i" ca "mhsm node $i" "serverAuth,clientAuth" \
        "URI:spiffe://mhsm/node/$i,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost" rsa
done
make_leaf operator ca "mhsm operator" "clientAuth" "URI:spiffe://mhsm/operator"
make_leaf admin ca "mhsm admin" "clientAuth" "URI:spiffe://mhsm/admin"
make_leaf app ca "mhsm app" "clientAuth" "URI:spiffe://mhsm/app"
for c in $CLIENTS; do
    make_leaf "$c" ca "mhsm $c" "clientAuth" "URI:spiffe://mhsm/$c"
done
make_ca foreign-ca "foreign CA (not trusted by mhsm)"
make_leaf foreign foreign-ca "mhsm admin" "clientAuth" "URI:spiffe://mhsm/admin"
make_leaf foreign-node foreign-ca "mhsm node 4 (foreign)" "serverAuth,clientAuth" \
    "URI:spiffe://mhsm/node/4,IP:127.0.0.1,DNS:localhost" rsa
for i in 1 2 3; do
    make_custodian "sd$i"
done
