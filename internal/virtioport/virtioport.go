// Package virtioport finds a virtio-serial port by the name QEMU gave it
// (virtserialport,name=...), as udev's /dev/virtio-ports/<name> link
// would, on nodes that run without udev.
package virtioport

import (
	"os"
	"path/filepath"
	"strings"
)

// Find returns the /dev node of the port called name, or "" if there is
// none (not a QEMU VM, or no such channel).
func Find(name string) string {
	ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(p))
		}
	}
	return ""
}
