package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"text/template"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/ics"
)

// ScriptData is what a node's iPXE script is rendered from.
type ScriptData struct {
	HTTPBase  string
	MAC       string
	Node      int
	Hostname  string
	Addr      string // with prefix length
	Gateway   string
	Kernel    string
	Initramfs string
	Console   string
	Join      string
	Cmdline   string
	// Secret is the node's one-time bootstrap secret (locus.secret=).
	Secret string
	// CA pins the cluster CA the node must find at admission before it
	// sends its secret (locus.ca=sha256:<hex of the CA certificate>).
	CA string
}

// scriptTemplate boots the node's kernel and initramfs over HTTP with the
// command line init reads; waitTemplate keeps an unadmitted node asking,
// with a new DHCP exchange each time (once accepted, that exchange gives
// it its node address, the one its secret is bound to).
const scriptTemplate = `#!ipxe
echo Locus: booting node {{.Node}} ({{.Hostname}}, {{.MAC}})
kernel {{.HTTPBase}}/{{.Kernel}} initrd={{.Initramfs}} console={{.Console}} panic=-1 locus.node={{.Node}} locus.ip={{.Addr}}{{if .Gateway}} locus.gw={{.Gateway}}{{end}}{{if .Join}} locus.join={{.Join}}{{end}}{{if .Secret}} locus.secret={{.Secret}}{{end}}{{if .CA}} locus.ca={{.CA}}{{end}}{{if .Cmdline}} {{.Cmdline}}{{end}}
initrd {{.HTTPBase}}/{{.Initramfs}}
boot
`

const waitTemplate = `#!ipxe
echo Locus: {{.MAC}} is waiting for admission (locus node accept {{.MAC}})
sleep 10
dhcp
chain {{.HTTPBase}}/ipxe/{{.MACPath}}.ipxe
`

// HTTPConfig configures the HTTP service.
type HTTPConfig struct {
	Spec      *clusterspec.Spec
	Root      *os.Root
	HTTPBase  string
	Kernel    string
	Initramfs string
	Join      string
	Registry  *Registry
	Leases    *Leases
	// CAFile is the cluster CA's certificate (PEM), which scripts pin;
	// read for each script, as the node daemon makes it at first boot.
	CAFile string
	Log    *slog.Logger
}

// HTTPHandler serves the boot tree (with Range, straight from the file)
// and the per-node iPXE scripts under /ipxe/<mac>.ipxe.
func HTTPHandler(cfg HTTPConfig) http.Handler {
	boot := template.Must(template.New("boot").Parse(scriptTemplate))
	wait := template.Must(template.New("wait").Parse(waitTemplate))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		name, err := CleanPath(r.URL.Path)
		if err != nil {
			cfg.Log.Warn("http refused", "path", r.URL.Path, "from", r.RemoteAddr, "err", err)
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		if mac, ok := strings.CutPrefix(name, "ipxe/"); ok {
			serveScript(w, r, cfg, boot, wait, strings.TrimSuffix(mac, ".ipxe"))
			return
		}
		f, err := cfg.Root.Open(name)
		if err != nil {
			code := http.StatusNotFound
			if !errors.Is(err, fs.ErrNotExist) {
				code = http.StatusForbidden
			}
			http.Error(w, http.StatusText(code), code)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.Error(w, "not a file", http.StatusNotFound)
			return
		}
		cfg.record(r, name)
		http.ServeContent(w, r, name, st.ModTime(), f)
	})
}

// record notes a kernel or initramfs fetch against the client's MAC.
func (cfg HTTPConfig) record(r *http.Request, name string) {
	stage := ""
	switch name {
	case cfg.Kernel:
		stage = StageKernel
	case cfg.Initramfs:
		stage = StageInitramfs
	default:
		return
	}
	if mac, addr, ok := cfg.macOf(r.RemoteAddr); ok {
		cfg.Registry.Record(mac, stage, addr)
	}
}

// macOf finds the MAC that holds the lease for a remote address.
func (cfg HTTPConfig) macOf(remote string) (net.HardwareAddr, netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil || cfg.Leases == nil {
		return nil, netip.Addr{}, false
	}
	a := ap.Addr().Unmap()
	le, ok := cfg.Leases.ByAddr(a)
	if !ok {
		return nil, netip.Addr{}, false
	}
	mac, err := net.ParseMAC(le.MAC)
	return mac, a, err == nil
}

func serveScript(w http.ResponseWriter, r *http.Request, cfg HTTPConfig, boot, wait *template.Template, macPath string) {
	mac, err := net.ParseMAC(strings.ReplaceAll(macPath, "-", ":"))
	if err != nil || len(mac) != 6 {
		http.Error(w, "want /ipxe/<mac>.ipxe", http.StatusBadRequest)
		return
	}
	adm, err := cfg.Registry.Admit(mac, ClientIPXE)
	if err != nil {
		http.Error(w, "not admitted", http.StatusForbidden)
		return
	}
	var remote netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		remote = ap.Addr().Unmap()
	}
	// Only the address this MAC's DHCP exchange gave gets its script; a
	// script with a secret once per exchange.
	if err := cfg.Registry.ScriptAllowed(mac, remote, !adm.Wait); err != nil {
		if cfg.Log != nil {
			cfg.Log.Warn("netboot: script refused", "mac", mac.String(), "from", remote.String(), "err", err)
		}
		http.Error(w, "script refused: "+err.Error(), http.StatusForbidden)
		return
	}
	cfg.Registry.Record(mac, StageIPXE, remote)
	var buf bytes.Buffer
	if adm.Wait {
		wait.Execute(&buf, map[string]string{"HTTPBase": cfg.HTTPBase, "MAC": mac.String(), "MACPath": macPath})
	} else {
		p, err := cfg.Spec.NodeAddr(adm.Node)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pin := ""
		if cfg.CAFile != "" {
			b, err := os.ReadFile(cfg.CAFile)
			if err == nil {
				pin, err = ics.PinPEM(b)
			}
			if err != nil {
				// The node then admits without a pin, as before.
				cfg.Log.Warn("netboot: no cluster CA to pin in the script yet", "ca", cfg.CAFile, "err", err)
			}
		}
		err = boot.Execute(&buf, ScriptData{
			CA:       pin,
			HTTPBase: cfg.HTTPBase, MAC: mac.String(), Node: adm.Node, Hostname: adm.Hostname, Addr: p.String(),
			Gateway: cfg.Spec.Interconnect.Gateway, Kernel: cfg.Kernel, Initramfs: cfg.Initramfs,
			Console: cfg.Spec.Console, Join: cfg.Join, Cmdline: cfg.Spec.Kernel.Cmdline,
			// Bound to the address the node takes from this script, from
			// which it will present it (the lease holder's own, unless it
			// was given a pool address while it waited for admission).
			Secret: cfg.Registry.IssueSecret(mac, adm.Node, p.Addr()),
		})
		if err != nil {
			http.Error(w, fmt.Sprintf("render script: %v", err), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(buf.Bytes())
}
