package pid1

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/locus-ssi/locus/services/events"
)

func TestParseCmdline(t *testing.T) {
	c, err := ParseCmdline(`BOOT_IMAGE=/vmlinuz console=tty0 console=ttyS0,115200 quiet locus.node=3 locus.ip=10.77.0.3/24 locus.gw=10.77.0.254 locus.join=10.77.0.1:7470 locus.poweroff=1 locus.future=x foo="a b"` + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != 3 || c.Addr != netip.MustParsePrefix("10.77.0.3/24") || c.Gateway != netip.MustParseAddr("10.77.0.254") ||
		c.Join != "10.77.0.1:7470" || !c.PowerOff || c.Console != "ttyS0" || len(c.Unknown) != 1 {
		t.Errorf("ParseCmdline = %+v", c)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	if c, err := ParseCmdline("locus.ca=" + pin); err != nil || c.CAPin != pin {
		t.Errorf("locus.ca: %+v %v", c, err)
	}
	for _, in := range []string{"locus.ca=md5:abcd", "locus.ca=sha256:xyz", "locus.node=x", "locus.node=0", "locus.ip=10.0.0.1", "locus.ip=::1/64", "locus.gw=foo", "locus.poweroff=maybe", "locus.if=a/b", "locus.join="} {
		_, err := ParseCmdline(in)
		opt, _, _ := strings.Cut(in, "=")
		if err == nil || !strings.Contains(err.Error(), opt) {
			t.Errorf("ParseCmdline(%q) = %v, want an error naming %s", in, err, opt)
		}
	}
}

func TestSplitCmdlineQuotes(t *testing.T) {
	got := splitCmdline(`a "b c" d="e f"  g`)
	want := []string{"a", "b c", "d=e f", "g"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("splitCmdline = %q, want %q", got, want)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 locus.node=2 locus.ip=10.77.0.2/24")
	f.Add(`locus.join="10.0.0.1:7470" locus.poweroff`)
	f.Add("locus.node=99999999999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			return
		}
		if c.Node < 0 || (c.Addr.IsValid() && !c.Addr.Addr().Is4()) {
			t.Fatalf("ParseCmdline(%q) accepted %+v", s, c)
		}
	})
}

func TestRunPhasesOrderAndParallel(t *testing.T) {
	var console bytes.Buffer
	feed := events.NewFeed(0)
	var running, maxRunning atomic.Int32
	var order []string
	task := func(name string) Task {
		return Task{name, func(context.Context) error {
			n := running.Add(1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			return nil
		}}
	}
	mark := func(name string) Task {
		return Task{name, func(context.Context) error { order = append(order, name); return nil }}
	}
	err := RunPhases(context.Background(), &console, feed, []Phase{
		{Name: "a", Tasks: []Task{task("1"), task("2"), task("3")}},
		{Name: "b", Tasks: []Task{mark("b")}},
		{Name: "c", Tasks: []Task{mark("c")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if maxRunning.Load() != 3 {
		t.Errorf("tasks of one phase ran %d at a time, want 3", maxRunning.Load())
	}
	if strings.Join(order, "") != "bc" {
		t.Errorf("phases ran in order %v, want b then c", order)
	}
	var got []string
	for _, e := range feed.Since(0) {
		got = append(got, string(e.Kind)+" "+e.Name)
	}
	want := []string{"phase.started a", "phase.done a", "phase.started b", "phase.done b", "phase.started c", "phase.done c"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for _, p := range []string{"a", "b", "c"} {
		if !strings.Contains(console.String(), "locus-init: phase "+p+" done in ") {
			t.Errorf("console lacks phase %s line for people:\n%s", p, console.String())
		}
	}
}

func TestRunPhasesStopsAtFailure(t *testing.T) {
	var console bytes.Buffer
	feed := events.NewFeed(0)
	ran := false
	boom := errors.New("boom")
	err := RunPhases(context.Background(), &console, feed, []Phase{
		{Name: "network", Tasks: []Task{{"dhcp", func(context.Context) error { return boom }}}},
		{Name: "join", Tasks: []Task{{"x", func(context.Context) error { ran = true; return nil }}}},
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "phase network: dhcp") {
		t.Errorf("RunPhases = %v, want boom naming phase and task", err)
	}
	if ran {
		t.Error("a phase after the failed one ran")
	}
	evs := feed.Since(0)
	if last := evs[len(evs)-1]; last.Kind != events.PhaseFailed || last.Name != "network" || !strings.Contains(last.Error, "boom") {
		t.Errorf("last event = %+v, want network failed with boom", last)
	}
	if !strings.Contains(console.String(), "locus-init: phase network failed") {
		t.Errorf("console = %q, want the failure", console.String())
	}
}
