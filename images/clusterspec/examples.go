package clusterspec

import "embed"

// Examples holds the example specs shipped with locus (examples/*.yaml).
//
//go:embed examples/*.yaml
var Examples embed.FS

// ExampleSpec returns the commented example that shows every key.
func ExampleSpec() []byte {
	b, err := Examples.ReadFile("examples/locus.yaml")
	if err != nil {
		panic("images: example spec missing from the binary: " + err.Error())
	}
	return b
}
