package kubedisco

import (
	"context"
	"sync"
	"time"
)

// serviceOverrides is the Transport's Resilience with one Service's
// overrides (its annotations, as the agent serves them), refreshed in the
// background every overridesRefresh.
type serviceOverrides struct {
	mu         sync.Mutex
	effective  *Resilience // nil until first fetched
	fetchedAt  time.Time
	refreshing bool
}

// overridesRefresh is how old a Service's overrides may get before a
// request refreshes them (in the background; the request uses the old
// ones). An annotation change reaches the Transport within about this.
const overridesRefresh = 5 * time.Second

// forService returns base with the Service's overrides. The first request
// to a Service fetches them; later ones refresh them in the background.
func (s *serviceOverrides) forService(ctx context.Context, client *Client, host string, base *Resilience) *Resilience {
	s.mu.Lock()
	eff, at, busy := s.effective, s.fetchedAt, s.refreshing
	if eff != nil && (busy || time.Since(at) < overridesRefresh) {
		s.mu.Unlock()
		return eff
	}
	if eff != nil {
		s.refreshing = true
		s.mu.Unlock()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.fetch(ctx, client, host, base)
		}()
		return eff
	}
	s.mu.Unlock()
	return s.fetch(ctx, client, host, base)
}

func (s *serviceOverrides) fetch(ctx context.Context, client *Client, host string, base *Resilience) *Resilience {
	eff := base
	var err error
	var svc *Service
	if name, perr := ParseServiceName(host); perr == nil {
		svc, err = client.Service(ctx, name.Namespace, name.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && s.effective != nil:
		// The agent did not answer: keep what it said last (the request
		// itself fails or not by its own pick).
		eff = s.effective
	case svc != nil && svc.Resilience != nil:
		o := base.WithOverrides(svc.Resilience)
		eff = &o
	}
	s.effective, s.fetchedAt, s.refreshing = eff, time.Now(), false
	return eff
}
