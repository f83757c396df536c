//go:build tools

// Package tools pins HashiCorp's consul as a dependency so that its own
// go.mod replace/exclude directives are ignored and the published nested
// modules are used instead.
package tools

import _ "github.com/hashicorp/consul"
