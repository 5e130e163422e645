#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the
# Go modules pinned in this folder's go.mod into a cache outside the repository:
#   $RETRAIN_CACHE/controlplane/v<K8S>/bin   (RETRAIN_CACHE defaults to ~/.cache/retrain-operator)
# A version other than go.mod's (K8S=1.34.4) gets its own go.mod, derived from this one,
# in the cache. Prints the bin directory on stdout; everything else goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pinned="$(sed -n 's/^\tk8s.io\/kubernetes v//p' "$here/go.mod")"
version="${K8S:-$pinned}"
version="${version#v}"
case "$version" in
  1.[0-9][0-9].[0-9]*) ;;
  1.[0-9][0-9]) echo "K8S=$version: give a patch release, e.g. K8S=$version.0" >&2; exit 2 ;;
  *) echo "K8S=$version: expected a Kubernetes release such as 1.37.2" >&2; exit 2 ;;
esac
cache="${RETRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retrain-operator}/controlplane/v$version"
bin="$cache/bin"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
missing=()
for c in "${components[@]}"; do [ -x "$bin/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null 2>&1 || {
  echo "controlplane: the Go toolchain is not on PATH; install Go (1.26 or newer) to build ${missing[*]}" >&2
  exit 1; }

mkdir -p "$bin" "$cache/logs"
src="$here"
if [ "$version" != "$pinned" ]; then
  # Another release: a go.mod of the same shape, its replace list taken from that release's own
  # go.mod (the staging modules differ between releases), each published as v0.<minor>.<patch>.
  src="$cache/src"
  mkdir -p "$src/etcd"
  cp "$here/tools.go" "$src/"
  cp "$here/etcd/main.go" "$src/etcd/"
  log="$cache/logs/tidy.log"
  upstream="$( (go mod download -json "k8s.io/kubernetes@v$version" 2>"$log" || true) |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -n "$upstream" ] || { echo "controlplane: k8s.io/kubernetes v$version is not available; see $log" >&2; exit 1; }
  {
    echo "module retrain.dev/controlplane"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$upstream"
    echo
    echo "require k8s.io/kubernetes v$version"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$upstream" |
      while read -r module; do printf '\t%s => %s v0.%s\n' "$module" "$module" "${version#1.}"; done
    echo ")"
  } > "$src/go.mod"
  (cd "$src" && go mod tidy) >>"$log" 2>&1 || {
    echo "controlplane: resolving Kubernetes v$version failed; see $log" >&2; tail -5 "$log" >&2; exit 1; }
fi
ldflags="-s -w"
for v in gitVersion=v$version gitMajor=${version%%.*} gitMinor=$(echo "$version" | cut -d. -f2) gitTreeState=clean; do
  ldflags="$ldflags -X k8s.io/component-base/version.$v -X k8s.io/client-go/pkg/version.$v"
done
for c in "${missing[@]}"; do
  pkg="k8s.io/kubernetes/cmd/$c"
  [ "$c" = etcd ] && pkg="./etcd"
  log="$cache/logs/build-$c.log"
  start=$(date +%s)
  echo "controlplane: building $c (Kubernetes v$version) into $bin" >&2
  (cd "$src" && go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$bin/$c.tmp" "$pkg") >"$log" 2>&1 || {
    echo "controlplane: building $c failed; see $log" >&2; tail -20 "$log" >&2; exit 1; }
  mv "$bin/$c.tmp" "$bin/$c"
  echo "controlplane: built $c in $(( $(date +%s) - start )) s" >&2
done
echo "$bin"
