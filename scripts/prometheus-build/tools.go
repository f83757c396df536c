//go:build tools

// Package tools pins Prometheus as a dependency, so `go build` can build its server from
// the Go module proxy at exactly the version in go.mod.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
