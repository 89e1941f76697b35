#!/usr/bin/env bash
# Creates the files docker-compose.yml's secrets name, with random values, in
# $PANOPTES_SECRETS (default deploy/compose/secrets; never committed):
#   - the operator and viewer API tokens;
#   - Redis (TLS only, ACL users, deploy/redis/): one password per ACL user (redis-coordinator,
#     redis-ingest, redis-workers, redis-ops for people and tools), a private CA
#     (redis-ca.crt; its key redis-ca.key is mounted nowhere), the server's certificate
#     (redis-server.{crt,key}: DNS redis and localhost, IP 127.0.0.1; also a client
#     certificate for the health check's redis-cli) and one client
#     certificate per component for mutual TLS (redis-client-<component>.{crt,key});
#   - empty Kafka credentials for the dev profile (the development broker has no SASL or TLS;
#     production: put your Kafka CA in kafka-ca.crt and the SASL password in kafka-password).
# Existing files are kept, so it is safe to run again (the TLS set is made again only when one
# of its files is missing).
# The folder is private (0700); each file is readable by the containers' user 10001 only
# when run as root (0400, owned by 10001), else by anyone who can enter the folder (0444).
set -euo pipefail
dir="${PANOPTES_SECRETS:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"
own() {
  if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$dir/$1"
    chmod 0400 "$dir/$1"
  else
    chmod 0444 "$dir/$1"
  fi
}
make() {
  local name=$1
  shift
  [ -e "$dir/$name" ] && return 0
  "$@" > "$dir/$name"
  own "$name"
}
make api-operator-token openssl rand -hex 32
make api-viewer-token openssl rand -hex 32
for user in coordinator ingest workers ops; do
  make "redis-$user" openssl rand -hex 32
done
make kafka-password true
make kafka-ca.crt true

# Redis TLS: a CA, the server's certificate, a client certificate per component (EC P-256).
CLIENTS=(coordinator ingest workers)
tls_files=(redis-ca.crt redis-ca.key redis-server.crt redis-server.key)
for c in "${CLIENTS[@]}"; do tls_files+=("redis-client-$c.crt" "redis-client-$c.key"); done
missing=0
for f in "${tls_files[@]}"; do [ -e "$dir/$f" ] || missing=1; done
if [ "$missing" = 1 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -days 825 -subj "/CN=panoptes-compose-redis-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tmp/redis-ca.key" -out "$tmp/redis-ca.crt" 2>/dev/null
  # leaf NAME CN EXTENSIONS: a key and a certificate signed by the CA
  leaf() {
    openssl req "${ec[@]}" -subj "/CN=$2" -keyout "$tmp/$1.key" -out "$tmp/$1.csr" 2>/dev/null
    printf '%s\n' "$3" > "$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/redis-ca.crt" -CAkey "$tmp/redis-ca.key" \
      -CAcreateserial -days 825 -extfile "$tmp/$1.ext" -out "$tmp/$1.crt" 2>/dev/null
  }
  leaf redis-server redis \
    "subjectAltName=DNS:redis,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"
  for c in "${CLIENTS[@]}"; do
    leaf "redis-client-$c" "$c" "extendedKeyUsage=clientAuth"
  done
  for f in "${tls_files[@]}"; do
    rm -f "$dir/$f"
    cp "$tmp/$f" "$dir/$f"
    own "$f"
  done
fi
echo "secrets in $dir (operator token: $dir/api-operator-token)"
