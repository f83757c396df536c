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
exec "$(dirname "$0")/go-tool.sh" consul consul-build github.com/hashicorp/consul github.com/hashicorp/consul version
