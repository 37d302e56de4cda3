// Package images holds the cluster spec (locus.yaml) and the recipe that
// turns it into boot artefacts.
//
// A spec is decoded strictly: every key must be known and every value must
// have the right type, and errors name the file, the line and the key. An
// empty spec is valid and gets defaults (Defaults). The kernel comes from
// Debian's linux-image-amd64 package, fetched with apt so that apt verifies
// it, or from a path the user gives; modules are resolved with their
// dependencies (modules.dep, or each module's own .modinfo when the tree
// ships none) so the initramfs carries exactly what init loads.
package images
