package kubedisco

import (
	"testing"
	"time"
)

// closeInterval makes the next record end the failure-percentage interval.
func closeInterval(s *outlierState) {
	s.mu.Lock()
	s.intervalStart = s.intervalStart.Add(-24 * time.Hour)
	s.mu.Unlock()
}

func endpoints(n int) func() int { return func() int { return n } }

// TestFailurePercentageEjects: an endpoint failing 90% of its requests
// (the consecutive rule off) is ejected when the interval ends; one below the volume or the threshold is not, nor is a
// healthy one.
func TestFailurePercentageEjects(t *testing.T) {
	r := (&Resilience{ConsecutiveFailures: -1, Interval: time.Hour}).withDefaults()
	s := newOutlierState()
	for i := range 100 {
		s.record("bad", i%10 != 0, &r, endpoints(4))    // 90% failed
		s.record("ok", i%10 == 0, &r, endpoints(4))     // 10% failed
		s.record("border", i%20 < 17, &r, endpoints(4)) // 85%: not above
	}
	if s.ejected("bad", time.Now()) {
		t.Fatal("ejected before the interval ended")
	}
	s2 := newOutlierState() // 19 failures only: below the volume of 20
	for range 19 {
		s2.record("quiet", true, &r, endpoints(4))
	}
	closeInterval(s)
	closeInterval(s2)
	until := s.record("ok", false, &r, endpoints(4))
	s2.record("other", false, &r, endpoints(4))
	now := time.Now()
	if !s.ejected("bad", now) || until.Before(now.Add(29*time.Second)) {
		t.Fatalf("endpoint failing 90%% not ejected for the base ejection time (until %s)", until)
	}
	for _, addr := range []string{"ok", "border"} {
		if s.ejected(addr, now) {
			t.Errorf("%s ejected", addr)
		}
	}
	if s2.ejected("quiet", now) {
		t.Error("endpoint with 19 requests ejected; the volume is 20")
	}
}

func TestFailurePercentageIsBoundedAndCanBeOff(t *testing.T) {
	r := (&Resilience{ConsecutiveFailures: -1, Interval: time.Hour}).withDefaults()
	s := newOutlierState()
	addrs := []string{"a", "b", "c", "d"}
	for range 50 {
		for _, a := range addrs {
			s.record(a, true, &r, endpoints(4))
		}
	}
	closeInterval(s)
	s.record("a", true, &r, endpoints(4))
	ejected := 0
	for _, a := range addrs {
		if s.ejected(a, time.Now()) {
			ejected++
		}
	}
	if ejected != 2 {
		t.Fatalf("%d of 4 failing endpoints ejected; want 2 (50%%)", ejected)
	}

	off := r.WithOverrides(&ServiceResilience{Outlier: &OutlierOverrides{FailurePercentage: new(uint32(0))}})
	s = newOutlierState()
	for i := range 100 {
		s.record("a", i%10 != 0, &off, endpoints(4))
	}
	closeInterval(s)
	s.record("a", false, &off, endpoints(4))
	if s.ejected("a", time.Now()) {
		t.Fatal("ejected with outlier-failure-percentage 0 (rule off)")
	}
}

func TestConsecutiveFailuresStillEject(t *testing.T) {
	r := (&Resilience{}).withDefaults()
	s := newOutlierState()
	for i := 1; i <= 5; i++ {
		until := s.record("a", true, &r, endpoints(2))
		if got := !until.IsZero(); got != (i == 5) {
			t.Fatalf("failure %d in a row: ejected %t", i, got)
		}
	}
}

func TestWithOverridesCoversEveryOutlierKnob(t *testing.T) {
	base := (&Resilience{}).withDefaults()
	got := base.WithOverrides(&ServiceResilience{
		Outlier: &OutlierOverrides{
			ConsecutiveFailures: new(uint32(0)),
			FailurePercentage:   new(uint32(70)),
			Interval:            "2s",
			BaseEjectionTime:    "10s",
			MaxEjectionTime:     "20s",
			MaxEjectionPercent:  new(uint32(30)),
		},
		Retry: &RetryOverrides{MaxAttempts: new(uint32(1))},
	})
	want := base
	want.ConsecutiveFailures, want.FailurePercentage, want.Interval = -1, 70, 2*time.Second
	want.BaseEjectionTime, want.MaxEjectionTime, want.MaxEjectionPercent, want.MaxAttempts = 10*time.Second, 20*time.Second, 30, 1
	if got != want {
		t.Fatalf("with overrides\n got %+v\nwant %+v", got, want)
	}
	if again := got.withDefaults(); again != got {
		t.Fatalf("defaults undo the overrides: %+v", again)
	}
	none := base.WithOverrides(&ServiceResilience{Outlier: &OutlierOverrides{MaxEjectionPercent: new(uint32(0))}})
	s := newOutlierState()
	for range 10 {
		s.record("a", true, &none, endpoints(4))
	}
	if s.ejected("a", time.Now()) {
		t.Fatal("ejected with outlier-max-ejection-percent 0")
	}
}

func TestEjectorSetOverrides(t *testing.T) {
	e := NewEjector(nil)
	e.SetOverrides(&ServiceResilience{Outlier: &OutlierOverrides{ConsecutiveFailures: new(uint32(2))}})
	e.Record("a", true, 3)
	if e.Record("a", true, 3).IsZero() || !e.Ejected("a") {
		t.Fatal("not ejected after 2 failures in a row with outlier-consecutive-failures 2")
	}
	e.SetOverrides(nil)
	for range 4 {
		e.Record("b", true, 3)
	}
	if e.Ejected("b") {
		t.Fatal("ejected after 4 failures with the overrides gone (default 5)")
	}
}

func TestEjectorUseKeepsEjections(t *testing.T) {
	e := NewEjector(nil)
	for range 5 {
		e.Record("a", true, 4)
	}
	if !e.Ejected("a") {
		t.Fatal("not ejected after 5 failures in a row")
	}
	e.Use(&Resilience{ConsecutiveFailures: 2})
	if !e.Ejected("a") {
		t.Fatal("new settings brought back an ejected endpoint")
	}
	e.Record("b", true, 4)
	if e.Record("b", true, 4).IsZero() || !e.Ejected("b") {
		t.Fatal("not ejected after 2 failures in a row under the new settings")
	}
}
