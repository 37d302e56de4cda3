package ha

import (
	"fmt"
	"slices"

	"github.com/locus-ssi/locus/images/clusterspec"
)

// def is one HA service of the spec, checked.
type def struct {
	clusterspec.HASettings
	Name    string
	Level   int
	Command []string
	// Provider and Type name its OCF agent ("" for a command).
	Provider, Type string
	Params         map[string]string
	// Nodes it may run on, in order of preference (all the spec's nodes
	// if the service names none).
	Nodes []int
}

func (d *def) ocf() bool { return d.Type != "" }

// Kind is how the service runs: ocf:provider:type or command.
func (d *def) Kind() string {
	if d.ocf() {
		return "ocf:" + d.Provider + ":" + d.Type
	}
	return "command"
}

// defs checks the spec's HA services; allNodes are the spec's nodes.
func defs(svcs []clusterspec.Service, allNodes []int) ([]*def, error) {
	var out []*def
	seen := map[string]bool{}
	for _, sv := range svcs {
		if !sv.IsHA() {
			continue
		}
		if seen[sv.Name] {
			return nil, fmt.Errorf("ha: service %q given twice", sv.Name)
		}
		seen[sv.Name] = true
		st, err := sv.HA.Settings()
		if err != nil {
			return nil, fmt.Errorf("ha: service %s: %w", sv.Name, err)
		}
		d := &def{HASettings: st, Name: sv.Name, Level: sv.Level, Command: sv.Command, Params: sv.Params, Nodes: slices.Clone(sv.Nodes)}
		if len(d.Nodes) == 0 {
			d.Nodes = slices.Clone(allNodes)
		}
		if sv.OCF != "" {
			if d.Provider, d.Type, err = ParseAgentName(sv.OCF); err != nil {
				return nil, fmt.Errorf("ha: service %s: %w", sv.Name, err)
			}
			for k := range sv.Params {
				if !ValidParam(k) {
					return nil, fmt.Errorf("ha: service %s: parameter %q", sv.Name, k)
				}
			}
		} else if len(sv.Command) == 0 {
			return nil, fmt.Errorf("ha: service %s: no command and no ocf agent", sv.Name)
		}
		out = append(out, d)
	}
	return out, nil
}

// instanceIDs are the instance names the service wants when eligible
// nodes could run it: 0..N-1, or, for instances: all, "n<node>" per
// eligible node.
func (d *def) instanceIDs(eligible []int) []string {
	if d.All {
		ids := make([]string, len(eligible))
		for i, n := range eligible {
			ids[i] = fmt.Sprintf("n%d", n)
		}
		return ids
	}
	ids := make([]string, d.Instances)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	return ids
}

// pinned is the node an instance of an instances: all service belongs
// to (0 for a floating instance).
func pinned(inst string) int {
	var n int
	if _, err := fmt.Sscanf(inst, "n%d", &n); err != nil {
		return 0
	}
	return n
}
