package kubedisco

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkTransportPicker is the Transport's own cost per request around
// the agent's answer (which costs a local HTTP request either way): the
// outcome's bookkeeping with nothing ejected (the agent's pick is used),
// and, with one endpoint ejected, the local tier plan and weighted pick
// over 10 endpoints in two tiers.
func BenchmarkTransportPicker(b *testing.B) {
	svc := &Service{Namespace: "shop", Name: "web", Exists: true}
	for i := range 10 {
		svc.Endpoints = append(svc.Endpoints, Endpoint{
			IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Ports: []EndpointPort{{Name: "http", Port: 80}},
			Ready: true, Weight: uint32(100 * (1 + i%3)), Priority: uint32(i / 5),
		})
	}
	r := (&Resilience{}).withDefaults()
	count := func() int { return 10 }
	b.Run("nothing-ejected", func(b *testing.B) {
		s := newOutlierState()
		addrs := make([]string, 10)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.0.0.%d:80", 1+i)
		}
		i := 0
		for b.Loop() {
			if s.anyEjected(time.Now()) {
				b.Fatal("ejected")
			}
			s.record(addrs[i%10], false, &r, count)
			i++
		}
	})
	b.Run("one-ejected", func(b *testing.B) {
		s := newOutlierState()
		eject(s, "10.0.0.1:80")
		for b.Loop() {
			addr, err := choose(svc, "http", s, nil)
			if err != nil {
				b.Fatal(err)
			}
			s.record(addr, false, &r, count)
		}
	})
}
