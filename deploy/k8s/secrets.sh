#!/usr/bin/env bash
# Creates the Secrets the manifests reference, with fresh random values, in namespace $1.
# Existing Secrets are left alone (rotation is a deliberate step: docs/runbook.md).
#
#   deploy/k8s/secrets.sh bgimages-dev            # create what is missing, in the cluster
#   deploy/k8s/secrets.sh bgimages-dev --print    # print the YAML instead (no cluster needed)
#
# Inputs (optional, from the environment):
#   JWT_KEYS_FILE  JSON object kid -> key (RS256 public PEMs from p2, or HS256 secrets);
#                  without it a single HS256 key with kid "dev-1" is generated (dev clusters).
#   TLS_CERT, TLS_KEY  the gateway's certificate and key (PEM files); without them a
#                  self-signed certificate for TLS_HOST (default bgimages.localtest.me) is made.
set -euo pipefail

ns=${1:?usage: secrets.sh NAMESPACE [--print]}
mode=${2:-apply}

# LENGTH random characters from [A-Za-z0-9] (default 40: the most MinIO takes as a secret key).
rand() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom 2>/dev/null | head -c "${1:-40}" || true; }

emit() {  # emit NAME kubectl-create-secret-args...
    local name=$1
    shift
    if [[ $mode == --print ]]; then
        kubectl create secret "$@" --namespace "$ns" --dry-run=client -o yaml
        echo ---
    elif kubectl get secret "$name" --namespace "$ns" >/dev/null 2>&1; then
        echo "secret/$name exists, left unchanged" >&2
    else
        kubectl create secret "$@" --namespace "$ns"
    fi
}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

emit bgimages-service-token generic bgimages-service-token --from-literal=SERVICE_TOKEN="$(rand)"

emit bgimages-minio-root generic bgimages-minio-root \
    --from-literal=MINIO_ROOT_USER="root-$(rand 8)" --from-literal=MINIO_ROOT_PASSWORD="$(rand)"

emit bgimages-s3 generic bgimages-s3 \
    --from-literal=S3_ACCESS_KEY="bgimages-$(rand 10)" --from-literal=S3_SECRET_KEY="$(rand)"

pg_password=$(rand)
emit bgimages-postgres generic bgimages-postgres \
    --from-literal=POSTGRES_USER=bgimages --from-literal=POSTGRES_PASSWORD="$pg_password" \
    --from-literal=DATABASE_URL="postgresql://bgimages:${pg_password}@postgres:5432/bgimages"

if [[ -n ${JWT_KEYS_FILE:-} ]]; then
    cp "$JWT_KEYS_FILE" "$workdir/jwt.json"
else
    printf '{"dev-1": "%s"}' "$(rand 64)" >"$workdir/jwt.json"
fi
emit bgimages-jwt generic bgimages-jwt --from-file=JWT_KEYS="$workdir/jwt.json"

emit bgimages-hips generic bgimages-hips --from-literal=HIPS_SIGNING_KEY="$(rand 64)"

if [[ -z ${TLS_CERT:-} ]]; then
    host=${TLS_HOST:-bgimages.localtest.me}
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$host" \
        -addext "subjectAltName=DNS:$host" \
        -keyout "$workdir/tls.key" -out "$workdir/tls.crt" 2>/dev/null
    TLS_CERT=$workdir/tls.crt
    TLS_KEY=$workdir/tls.key
fi
emit bgimages-tls tls bgimages-tls --cert="$TLS_CERT" --key="${TLS_KEY:?TLS_KEY is needed with TLS_CERT}"
