#!/usr/bin/env bash
# Build Prometheus's server for pilot's end-to-end telemetry test, cache it outside the repo,
# print its path.
#
# Debian's prometheus package (bookworm, 2.42) is built without Consul service discovery
# ("field consul_sd_configs not found"), and that is what the test must show: Prometheus
# finding every pilot through Consul. So, as for consul (install-consul.sh), a wrapper
# module in scripts/prometheus-build requires github.com/prometheus/prometheus at a pinned
# version (Go module v0.316.0 = Prometheus 3.16) with a full go.sum, and `go build` makes
# the server. Apache-2.0; used only to test. Needs Go >= 1.26.7. promtool still comes from
# Debian (scripts/setup-test-deps.sh).
#
# Cache: $PILOT_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/pilot). Several minutes the first
# time, then instant.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=$(awk '$1=="require" && $2=="github.com/prometheus/prometheus" {print $3}' "$here/prometheus-build/go.mod")
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
bin="$cache/prometheus-$version/prometheus"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "install-prometheus: the go command is needed to build prometheus (https://go.dev/doc/install)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/prometheus-build/go.mod" "$here/prometheus-build/go.sum" "$here/prometheus-build/tools.go" "$work/"
echo "install-prometheus: building prometheus $version with $(go version | cut -d' ' -f3) (several minutes, once)" >&2
mkdir -p "$(dirname "$bin")"
(cd "$work" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
   go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/prometheus/prometheus/cmd/prometheus)
mv "$bin.tmp" "$bin"
"$bin" --version 2>&1 | head -1 >&2
echo "$bin"
