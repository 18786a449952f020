#!/bin/sh
# Renders every overlay of deploy/kubernetes with `kubectl kustomize` and validates it with
# kubernetes-validate --strict (PyPI, pinned) for the two newest Kubernetes versions it knows,
# then checks what the schemas cannot (scripts/k8s_check.py: references between objects, the
# KEDA objects, non-root pods, grace periods). Exit status non-zero on any problem.
set -eu
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "k8s_validate: kubectl is not installed (it renders the kustomizations)" >&2; exit 1; }
v=.flowkit/venv-k8s
if ! "$v/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  mkdir -p .flowkit
  python3 -m venv "$v" >&2
  "$v/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0" >&2
fi
schemas=$("$v/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
versions=$(ls "$schemas" | sed -n 's/^v\([0-9.]*\)-local-strict$/\1/p' | sort -V | tail -2)
out=.flowkit/k8s; mkdir -p "$out"
status=0
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  for k in $versions; do
    # kubernetes-validate exits 0 on errors: its ERROR lines decide.
    "$v/bin/kubernetes-validate" --strict --quiet -k "$k" "$out/$name.yaml" > "$out/$name-$k.log" 2>&1 || true
    if grep -q '^ERROR' "$out/$name-$k.log"; then
      echo "k8s: overlay $name does not validate against Kubernetes $k:" >&2; grep '^ERROR' "$out/$name-$k.log" >&2; status=1
    else
      echo "k8s: overlay $name valid for Kubernetes $k ($(grep -c '^kind:' "$out/$name.yaml") objects; $(grep -c "Couldn't find schema" "$out/$name-$k.log" || true) of custom kinds checked below)"
    fi
  done
  "$v/bin/python" scripts/k8s_check.py "$out/$name.yaml" || status=1
done
exit $status
