package netboot

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite testdata/packets/golden.json")

// goldenReply is what matters in an answer to a boot client.
type goldenReply struct {
	Client   string `json:"client"`
	Type     string `json:"type"`
	YourIP   string `json:"yiaddr"`
	BootFile string `json:"bootfile"`
	VendorID string `json:"vendor_id,omitempty"`
	NextSrv  string `json:"siaddr"`
	Error    string `json:"error,omitempty"`
}

// TestGoldenFirmwarePackets replays DHCP requests captured from real
// firmware during the PXE VM tests (QEMU's iPXE ROMs under SeaBIOS with
// e1000 and virtio-net, and OVMF's PXE, then iPXE) and compares the
// answers with testdata/packets/golden.json. Regenerate with -update.
func TestGoldenFirmwarePackets(t *testing.T) {
	files, _ := filepath.Glob("testdata/packets/*/*.bin")
	if len(files) == 0 {
		t.Fatal("no captured packets in testdata/packets")
	}
	sort.Strings(files)
	got := map[string]goldenReply{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// The VM tests' nodes 2-4 are in this test's node table as well
		// (52:54:00:79:00:0N), so each gets its static address.
		d, _, _ := newTestDHCP(t, goldenSpec, false)
		resp, kind, err := d.Reply(req)
		g := goldenReply{Client: kind.String()}
		if err != nil {
			g.Error = err.Error()
		} else {
			g.Type, g.YourIP, g.BootFile, g.VendorID, g.NextSrv = resp.MessageType().String(), resp.YourIPAddr.String(), resp.BootFileName, resp.ClassIdentifier(), resp.ServerIPAddr.String()
		}
		got[filepath.Base(filepath.Dir(f))+"/"+strings.TrimSuffix(filepath.Base(f), ".bin")] = g
	}
	golden := "testdata/packets/golden.json"
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]goldenReply
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers to captured firmware packets (-want +got):\n%s", diff)
	}
	// Whatever the golden file says, these must hold.
	for k, g := range got {
		switch {
		case strings.HasPrefix(k, "bios-") && g.Client == "bios-pxe" && g.BootFile != BIOSBootFile:
			t.Errorf("%s: BIOS PXE got %q", k, g.BootFile)
		case g.Client == "efi-pxe" && g.BootFile != EFISNPBootFile:
			t.Errorf("%s: UEFI PXE got %q", k, g.BootFile)
		case g.Client == "ipxe" && !strings.HasSuffix(g.BootFile, ".ipxe"):
			t.Errorf("%s: iPXE got %q, want its script (no chainload loop)", k, g.BootFile)
		}
	}
}

const goldenSpec = `
cluster: {name: pxetest}
interconnect: {subnet: 10.79.0.0/24}
nodes:
  - {number: 2, mac: "52:54:00:79:00:02"}
  - {number: 3, mac: "52:54:00:79:00:03"}
  - {number: 4, mac: "52:54:00:79:00:04"}
`
