#!/usr/bin/env bash
# Build a Go program that pilot's tests need from the Go module proxy, through a wrapper
# module that requires it (scripts/<build-dir>/: go.mod pinning the version, a full go.sum,
# tools.go importing the package), cache the binary outside the repo, print its path.
# Usage: scripts/go-tool.sh NAME BUILD_DIR MODULE PACKAGE VERSION_ARG
#   (see install-consul.sh and install-prometheus.sh; VERSION_ARG checks the binary runs)
# Cache: $PILOT_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/pilot)/NAME-VERSION/NAME.
set -euo pipefail
name=$1 build_dir=$2 module=$3 package=$4 version_arg=$5
here="$(cd "$(dirname "$0")" && pwd)"
version=$(awk -v m="$module" '$1=="require" && $2==m {print $3}' "$here/$build_dir/go.mod")
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
bin="$cache/$name-$version/$name"

if [ -x "$bin" ] && "$bin" "$version_arg" >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "$name: the go command is needed to build $name (https://go.dev/doc/install)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/$build_dir/go.mod" "$here/$build_dir/go.sum" "$here/$build_dir/tools.go" "$work/"
echo "$name: building $module $version with $(go version | cut -d' ' -f3) (several minutes, once)" >&2
mkdir -p "$(dirname "$bin")"
(cd "$work" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
   go build -trimpath -ldflags "-s -w" -o "$bin.tmp" "$package")
mv "$bin.tmp" "$bin"
"$bin" "$version_arg" 2>&1 | head -1 >&2
echo "$bin"
