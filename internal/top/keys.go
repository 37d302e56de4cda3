package top

import (
	"slices"
	"syscall"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/proc"
)

// Keys of the view.
const (
	KeyUp   = "up"
	KeyDown = "down"
	KeyQuit = "q"
)

// ParseKeys reads the keys in what a raw terminal sent: letters as
// themselves, the arrows as KeyUp and KeyDown, Ctrl-C and Esc as KeyQuit;
// anything else is dropped.
func ParseKeys(b []byte) []string {
	var keys []string
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == 0x1b && i+2 < len(b) && (b[i+1] == '[' || b[i+1] == 'O'):
			switch b[i+2] {
			case 'A':
				keys = append(keys, KeyUp)
			case 'B':
				keys = append(keys, KeyDown)
			}
			i += 2
		case c == 0x1b || c == 0x03:
			keys = append(keys, KeyQuit)
		case c > ' ' && c < 0x7f:
			keys = append(keys, string(c))
		}
	}
	return keys
}

// Action is what a key asks beyond the view: to quit, or to send Signal
// to Target.
type Action struct {
	Quit   bool
	Signal syscall.Signal
	Target *proc.Process
}

var sorts = []string{SortCPU, SortMem, SortPID}

// Key applies key to the view over s: s cycles the sort (CPU, memory,
// cluster PID); n shows one node, then the next, then every node again;
// up and down move the selection; k asks SIGTERM and K SIGKILL for the
// selected process; q quits.
func (v View) Key(key string, s Snapshot) (View, Action) {
	shown := len(v.Shown(s))
	switch key {
	case KeyQuit:
		return v, Action{Quit: true}
	case "s":
		v.Sort = sorts[(slices.Index(sorts, orDefault(v.Sort, SortCPU))+1)%len(sorts)]
	case "n":
		v.Node = nextNode(s.Status, v.Node)
		v.Selected = 0
	case KeyUp:
		v.Selected = max(v.Selected-1, 0)
	case KeyDown:
		v.Selected = min(v.Selected+1, max(shown-1, 0))
	case "k", "K":
		ps := v.Shown(s)
		if v.Selected < 0 || v.Selected >= len(ps) {
			return v, Action{}
		}
		sig := syscall.SIGTERM
		if key == "K" {
			sig = syscall.SIGKILL
		}
		p := ps[v.Selected]
		return v, Action{Signal: sig, Target: &p}
	}
	return v, Action{}
}

// Fit keeps the selection on a row that s shows.
func (v View) Fit(s Snapshot) View {
	if v.Selected >= 0 {
		v.Selected = min(v.Selected, max(len(v.Shown(s))-1, 0))
	}
	return v
}

// nextNode is the node after cur in the membership (0, every node,
// after the last).
func nextNode(st clms.Status, cur int) int {
	var ns []int
	for _, n := range st.Nodes {
		ns = append(ns, n.Node)
	}
	slices.Sort(ns)
	for _, n := range ns {
		if n > cur {
			return n
		}
	}
	return 0
}
