#!/usr/bin/env bash
# Creates the Secrets the dev overlay references, with random values (nothing is written to
# the repository): API tokens, the camera keyring, and a throwaway CA + certificates for the
# TLS volumes the base mounts. Production Secrets come from the secret store (External
# Secrets, Vault, cert-manager); their keys are listed in docs/deploy.md.
# Usage: deploy/k8s/overlays/dev/make-secrets.sh [namespace]   (kubectl pointing at the dev cluster)
set -euo pipefail
NS="${1:-panoptes}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
openssl rand -hex 32 > api-operator-token
openssl rand -hex 32 > api-viewer-token
echo "k1:$(openssl rand -base64 32)" > camera-keys
: > redis-password   # dev Redis has no ACL users
: > kafka-password   # the dev broker has no SASL
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=panoptes-dev-ca \
  -keyout ca.key -out ca.crt 2>/dev/null
for c in coordinator ingest worker; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=panoptes-$c" -keyout "$c.key" -out "$c.csr" 2>/dev/null
  openssl x509 -req -in "$c.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$c.crt" 2>/dev/null
  kubectl -n "$NS" create secret generic "panoptes-$c-tls" --from-file=tls.crt="$c.crt" \
    --from-file=tls.key="$c.key" --from-file=ca.crt=ca.crt --dry-run=client -o yaml | kubectl apply -f -
done
kubectl -n "$NS" create secret generic panoptes-coordinator-secrets --from-file=api-operator-token \
  --from-file=api-viewer-token --from-file=camera-keys --from-file=redis-password \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic panoptes-ingest-secrets --from-file=camera-keys \
  --from-file=redis-password --from-file=kafka-password --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic panoptes-worker-secrets --from-file=redis-password \
  --from-file=kafka-password --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic panoptes-metrics-ca --from-file=ca.crt \
  --dry-run=client -o yaml | kubectl apply -f -
echo "operator token (for the panoptes CLI): $(cat api-operator-token)"
