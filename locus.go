// Package locus carries the module's own go.mod and go.sum inside the
// binary: `locus image build` builds the u-root initramfs base from exactly
// the module versions Locus was built and tested with, wherever it runs.
package locus

import _ "embed"

// GoMod is this module's go.mod.
//
//go:embed go.mod
var GoMod []byte

// GoSum is this module's go.sum.
//
//go:embed go.sum
var GoSum []byte

// Version is the release, stamped at build time with
// -ldflags "-X github.com/locus-ssi/locus.Version=...".
var Version = "dev"
