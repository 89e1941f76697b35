#!/usr/bin/env bash
# Creates the files docker-compose.yml's secrets name, with random values, in
# $PANOPTES_SECRETS (default deploy/compose/secrets; never committed): the operator and viewer
# API tokens, and empty Kafka credentials for the dev profile (the development broker has no
# SASL or TLS; production: put your Kafka CA in kafka-ca.crt and the SASL password in
# kafka-password). Existing files are kept, so it is safe to run again.
# The folder is private (0700); each file is readable by the containers' user 10001 only
# when run as root (0400, owned by 10001), else by anyone who can enter the folder (0444).
set -euo pipefail
dir="${PANOPTES_SECRETS:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"
make() {
  local name=$1
  shift
  [ -e "$dir/$name" ] && return 0
  "$@" > "$dir/$name"
  if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$dir/$name"
    chmod 0400 "$dir/$name"
  else
    chmod 0444 "$dir/$name"
  fi
}
make api-operator-token openssl rand -hex 32
make api-viewer-token openssl rand -hex 32
make kafka-password true
make kafka-ca.crt true
echo "secrets in $dir (operator token: $dir/api-operator-token)"
