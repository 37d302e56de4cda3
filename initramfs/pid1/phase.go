package pid1

import (
	"context"
	"fmt"
	"io"
	"time"

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

// RunPhases runs phases in order, the tasks of each in parallel, and logs
// "locus-init: phase <name> done in <ms>ms" to console after each. It stops
// at the first phase with a failed task and returns that error, naming the
// phase and task.
func RunPhases(ctx context.Context, console io.Writer, phases []Phase) error {
	for _, p := range phases {
		start := time.Now()
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
			fmt.Fprintf(console, "locus-init: phase %s failed after %dms: %v\n", p.Name, time.Since(start).Milliseconds(), err)
			return err
		}
		fmt.Fprintf(console, "locus-init: phase %s done in %dms\n", p.Name, time.Since(start).Milliseconds())
	}
	return nil
}
