package locusd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterViewFanOutIsShared: fifty callers at once cost one fan-out
// to the nodes, not fifty.
func TestClusterViewFanOutIsShared(t *testing.T) {
	var gathered atomic.Int32
	c := &viewCache{gather: func(ctx context.Context) ClusterView {
		gathered.Add(1)
		time.Sleep(50 * time.Millisecond) // the calls to the nodes
		return ClusterView{}
	}}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); c.get(context.Background()) }()
	}
	wg.Wait()
	if n := gathered.Load(); n != 1 {
		t.Errorf("50 callers gathered the view %d times, want once", n)
	}
	c.at = time.Now().Add(-2 * viewTTL)
	c.get(context.Background())
	if n := gathered.Load(); n != 2 {
		t.Errorf("after the view went stale: gathered %d times, want 2", n)
	}
}

// TestStreamsAreLimited: past maxStreams open streams, another is refused
// with 503 rather than held.
func TestStreamsAreLimited(t *testing.T) {
	l := newStreamLimit()
	release := make(chan struct{})
	h := l.wrap(func(w http.ResponseWriter, r *http.Request) { <-release })
	var wg sync.WaitGroup
	for range maxStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/events?follow=true", nil))
		}()
	}
	for len(l) < maxStreams {
		time.Sleep(time.Millisecond)
	}
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest("GET", "/v1/events?follow=true", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("stream %d = %d, want 503", maxStreams+1, rec.Code)
	}
	close(release)
	wg.Wait()
}
