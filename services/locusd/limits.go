package locusd

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Bounds on what callers of the daemon's API can make it do.
const (
	// maxConns is how many connections the API serves at once.
	maxConns = 256
	// maxStreams is how many event streams (follow) it holds at once.
	maxStreams = 32
	// viewTTL: the cluster view (one call per node) is gathered at most
	// once in this long, however many callers ask.
	viewTTL = time.Second
)

// viewCache gathers the cluster view at most once per viewTTL: callers
// within it share the last one, and callers while it is being gathered
// wait for that one rather than start their own fan-out.
type viewCache struct {
	gather func(ctx context.Context) ClusterView

	mu   sync.Mutex // held while gathering
	at   time.Time
	view ClusterView
}

func (c *viewCache) get(ctx context.Context) ClusterView {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < viewTTL {
		return c.view
	}
	// Gathered for all callers: not cut short by this one's leaving.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	c.view, c.at = c.gather(gctx), time.Now()
	return c.view
}

// streamLimit admits at most maxStreams long-lived streams at once.
type streamLimit chan struct{}

func newStreamLimit() streamLimit { return make(streamLimit, maxStreams) }

// wrap refuses a stream over the limit with 503.
func (l streamLimit) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case l <- struct{}{}:
			defer func() { <-l }()
			h(w, r)
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, "locusd: too many event streams open; try again later", http.StatusServiceUnavailable)
		}
	}
}
