#!/usr/bin/env bash
# Checks the deployment files offline: the Kubernetes manifests in deploy/k8s against the
# API schemas (PyPI `kubernetes-validate`, strict: unknown fields are errors), and every
# `--flag` they and deploy/Dockerfile pass to `sonosam serve` / `sonosam embed` against that
# command's own --help (a renamed flag breaks the deployment, not only the docs); the
# Dockerfile with hadolint when it is installed (said when it is not).
#
#   scripts/validate-deploy.sh [SONOSAM_BINARY]      (default: target/debug/sonosam)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/sonosam}"
venv=target/k8s-venv
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  echo "creating $venv with kubernetes-validate" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q kubernetes-validate==1.37.0
fi
"$venv/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
# The flags each command gets: the server's manifest and the image's CMD; the Job's command.
flags_of() {
  case "$1" in
    serve) { cat deploy/k8s/server.yaml; grep '^CMD' deploy/Dockerfile; } ;;
    embed) cat deploy/k8s/embed-job.yaml ;;
  esac | grep -v '^ *#' | grep -o -- '--[a-z][a-z-]*' | sort -u
}
for cmd in serve embed; do
  help=$("$bin" "$cmd" --help)
  flags=$(flags_of "$cmd")
  for f in $flags; do
    grep -q -- "$f[ =<]" <<<"$help" || { echo "deploy: \`sonosam $cmd\` has no $f (used in deploy/)" >&2; exit 1; }
  done
  echo "deploy: sonosam $cmd flags in deploy/ exist: $(echo $flags | tr '\n' ' ')"
done
echo "deploy: manifests valid (kubernetes-validate --strict)"
if command -v hadolint >/dev/null; then
  hadolint deploy/Dockerfile && echo "deploy: Dockerfile passes hadolint"
else
  echo "deploy: hadolint is not installed (no Debian package; its releases come from GitHub, which CI cannot reach): the Dockerfile is not linted"
fi
