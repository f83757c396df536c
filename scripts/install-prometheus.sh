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
exec "$(dirname "$0")/go-tool.sh" prometheus prometheus-build github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus --version
