#!/usr/bin/env bash
# Renders deploy/ (kustomize) and validates every resource against the Kubernetes API
# schemas, offline: kustomize from the Go module proxy and kubernetes-validate (which
# bundles the schemas) from PyPI, both cached outside the clone. Prints the rendered
# manifests on stdout; exits non-zero when a resource is invalid.
#
#   scripts/validate-k8s.sh [KUBERNETES_VERSION]   (default 1.31.0)
#
# Environment: PERFPILOT_TOOLS_CACHE (default ~/.cache/perfpilot/tools)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${PERFPILOT_TOOLS_CACHE:-$HOME/.cache/perfpilot/tools}"
K8S_VERSION="${1:-1.31.0}"
KUSTOMIZE_VERSION=v5.7.1
VALIDATE_VERSION=1.37.0

log() { echo "validate-k8s.sh: $*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/kustomize-$KUSTOMIZE_VERSION" ]; then
  command -v go >/dev/null || die "Go is needed to fetch kustomize"
  log "fetching kustomize $KUSTOMIZE_VERSION"
  GOBIN="$TOOLS/gobin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  mv "$TOOLS/gobin/kustomize" "$TOOLS/kustomize-$KUSTOMIZE_VERSION"
fi
if [ ! -x "$TOOLS/validate-$VALIDATE_VERSION/bin/kubernetes-validate" ]; then
  command -v python3 >/dev/null || die "Python 3 is needed for kubernetes-validate"
  log "fetching kubernetes-validate $VALIDATE_VERSION"
  python3 -m venv "$TOOLS/validate-$VALIDATE_VERSION" >&2
  "$TOOLS/validate-$VALIDATE_VERSION/bin/pip" install -q "kubernetes-validate==$VALIDATE_VERSION" >&2
fi

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
"$TOOLS/kustomize-$KUSTOMIZE_VERSION" build "$HERE/../deploy" > "$rendered"
"$TOOLS/validate-$VALIDATE_VERSION/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$rendered" >&2 \
  || die "invalid resources (above)"
cat "$rendered"
