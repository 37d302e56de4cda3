package main

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/events"
)

// eventFilter is the flags that choose which events a verb prints.
type eventFilter struct {
	since uint64
	kinds []string
}

func (f *eventFilter) add(cmd *cobra.Command) {
	cmd.Flags().Uint64Var(&f.since, "since", 0, "only events after this sequence number")
	cmd.Flags().StringSliceVar(&f.kinds, "kind", nil, "only events of these kinds (repeatable; e.g. transition.applied)")
	var kinds []string
	for _, k := range events.Kinds() {
		kinds = append(kinds, string(k))
	}
	cmd.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions(kinds, cobra.ShellCompDirectiveNoFileComp))
}

// check refuses a kind no event has.
func (f *eventFilter) check() error {
	for _, k := range f.kinds {
		if !slices.Contains(events.Kinds(), events.Kind(k)) {
			return fmt.Errorf("--kind %q: not a kind of event (%v)", k, events.Kinds())
		}
	}
	return nil
}

// printer returns what prints one event: a line for people, or with
// --output json the event as one JSON object per line.
func (f *eventFilter) printer(e *env, output string) func(events.Event) {
	return func(ev events.Event) {
		if ev.Seq <= f.since || (len(f.kinds) > 0 && !slices.Contains(f.kinds, string(ev.Kind))) {
			return
		}
		if output == "json" {
			events.Write(e.stdout, ev)
			return
		}
		fmt.Fprintln(e.stdout, ev)
	}
}
