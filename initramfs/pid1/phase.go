package pid1

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"golang.org/x/sync/errgroup"
)

// Task is one step of a boot phase.
type Task struct {
	Name string
	Run  func(ctx context.Context) error
}

// Phase is a named set of tasks that run in parallel; phases run in order.
type Phase struct {
	Name  string
	Tasks []Task
}

// RunPhases runs phases in order, the tasks of each in parallel. It
// publishes each phase's start and end on feed (events.PhaseStarted,
// PhaseDone, PhaseFailed) and logs "locus-init: phase <name> done in
// <ms>ms" to console for people. It stops at the first phase with a
// failed task and returns that error, naming the phase and task.
func RunPhases(ctx context.Context, console io.Writer, feed events.Publisher, phases []Phase) error {
	for _, p := range phases {
		start := time.Now()
		feed.Publish(events.Event{Source: events.SourceInit, Kind: events.PhaseStarted, Name: p.Name})
		g, gctx := errgroup.WithContext(ctx)
		for _, t := range p.Tasks {
			g.Go(func() error {
				if err := t.Run(gctx); err != nil {
					return fmt.Errorf("phase %s: %s: %w", p.Name, t.Name, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			ms := time.Since(start).Milliseconds()
			feed.Publish(events.Event{Source: events.SourceInit, Kind: events.PhaseFailed, Name: p.Name, Millis: ms, Error: err.Error()})
			fmt.Fprintf(console, "locus-init: phase %s failed after %dms: %v\n", p.Name, ms, err)
			return err
		}
		ms := time.Since(start).Milliseconds()
		feed.Publish(events.Event{Source: events.SourceInit, Kind: events.PhaseDone, Name: p.Name, Millis: ms})
		fmt.Fprintf(console, "locus-init: phase %s done in %dms\n", p.Name, ms)
	}
	return nil
}
