#!/usr/bin/env bash
# Build HashiCorp's `consul` for pilot's tests, cache it outside the repo, print its path.
#
# Consul is not packaged by Debian, and `go install github.com/hashicorp/consul@VERSION` is
# refused because consul's go.mod has replace/exclude directives. So scripts/consul-build is a
# tiny wrapper module that *requires* consul: as a dependency its replace/exclude lines are
# ignored and the published nested modules (api, sdk, proto-public, envoyextensions,
# troubleshoot) are used. go.sum there pins every module's checksum, so the build is
# reproducible and needs no checksum-database lookups.
#
# Pinned to v1.16.1, the newest release that builds this way under the MPL-2.0 licence
# (v1.16.2+ and v1.15.10 are BUSL; v1.16.0 needs nested modules the proxy refuses). It is
# used only to test; it is never shipped with pilot.
#
# Cache: $PILOT_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/pilot). Takes ~7 minutes on 2 cores
# the first time (download and compile), then is instant.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=$(awk '$1=="require" && $2=="github.com/hashicorp/consul" {print $3}' "$here/consul-build/go.mod")
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
bin="$cache/consul-$version/consul"

if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "install-consul: the go command is needed to build consul (https://go.dev/doc/install, or Debian's golang-go)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/consul-build/go.mod" "$here/consul-build/go.sum" "$here/consul-build/tools.go" "$work/"
echo "install-consul: building consul $version with $(go version | cut -d' ' -f3) (several minutes, once)" >&2
mkdir -p "$(dirname "$bin")"
(cd "$work" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local \
   go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/hashicorp/consul)
mv "$bin.tmp" "$bin"
"$bin" version | head -1 >&2
echo "$bin"
