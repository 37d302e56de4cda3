package locusd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
)

// openFeed gives the daemon its event feed: PID 1's, through its socket,
// when cfg.EventSocket is set, else one of its own. It sets cfg.events,
// where the subsystems publish, and returns the feed to serve.
func openFeed(ctx context.Context, cfg *Config) (*events.Feed, error) {
	if cfg.EventSocket == "" {
		f := events.NewFeed(0)
		if cfg.CLMS != nil {
			f.SetNode(cfg.CLMS.Node)
		}
		cfg.events = f
		return f, nil
	}
	r, err := events.Dial(ctx, cfg.EventSocket, cfg.Log.With("svc", "events"))
	if err != nil {
		return nil, fmt.Errorf("locusd: the node's event feed: %w", err)
	}
	cfg.events = r
	return r.Feed(), nil
}

// publishMembership makes the membership service's news events: every
// transition applied on this node, this node becoming or ceasing to be
// the master, and each fencing it did.
func publishMembership(mc *clms.Config, pub events.Publisher) {
	src := events.SourceLocusd
	mc.OnMaster = func(master bool) {
		kind := events.RoleLost
		if master {
			kind = events.RoleTaken
		}
		pub.Publish(events.Event{Source: src, Kind: kind, Name: events.RoleMaster})
	}
	if fence := mc.Fence; fence != nil {
		mc.Fence = func(ctx context.Context, node int) error {
			err := fence(ctx, node)
			e := events.Event{Source: src, Kind: events.Fenced, Subject: node}
			if err != nil {
				e.Error = err.Error()
			}
			pub.Publish(e)
			return err
		}
	}
}

// publishTransitions publishes every transition m applies.
func publishTransitions(m *clms.Member, pub events.Publisher) {
	m.OnTransition(func(t clms.Transition) {
		pub.Publish(events.Event{Source: events.SourceLocusd, Kind: events.TransitionApplied, Transition: t.ID,
			Subject: t.Node, State: string(t.State), Master: t.Master, Detail: t.Reason})
	})
}

// serveEvents answers GET /v1/events: the node's events after ?since=N
// (default 0: all it keeps), one JSON object per line; with
// ?follow=true it then sends each new one until the client goes away.
func serveEvents(w http.ResponseWriter, r *http.Request, f *events.Feed) {
	var since uint64
	if s := r.URL.Query().Get("since"); s != "" {
		var err error
		if since, err = strconv.ParseUint(s, 10, 64); err != nil {
			http.Error(w, fmt.Sprintf("locusd: since=%q: want an event sequence number", s), http.StatusBadRequest)
			return
		}
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !follow {
		for _, e := range f.Since(since) {
			if err := enc.Encode(e); err != nil {
				return
			}
		}
		return
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush() // the client sees the stream open before any event
	}
	f.Stream(r.Context(), since, func(e events.Event) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	})
}

// publish puts an event of the daemon's on the node's feed (none before
// Run opened it).
func (cfg Config) publish(e events.Event) {
	if cfg.events == nil {
		return
	}
	e.Source = events.SourceLocusd
	cfg.events.Publish(e)
}
