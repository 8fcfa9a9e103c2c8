package kdgrpc

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/balancer"
)

type fixedPicker struct{}

func (fixedPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, nil
}

// BenchmarkPicker is the cost of one pick and its Done, over 10 endpoints,
// without and with outlier ejection counting the outcome, and with the
// retry interceptor's record of tried endpoints in the context.
func BenchmarkPicker(b *testing.B) {
	const n = 10
	pickers, weights, keys := make([]balancer.Picker, n), make([]int64, n), make([]string, n)
	for i := range n {
		pickers[i], weights[i], keys[i] = fixedPicker{}, int64(1+i%3), fmt.Sprintf("10.0.0.%d:80", i)
	}
	off := newPicker(pickers, weights, keys, nil, nil)
	e := newEjector(func() {})
	s, _ := (&OutlierConfig{}).settings()
	e.configure(s)
	defer e.close()
	stats, _ := e.track(keys)
	on := newPicker(pickers, weights, keys, stats, e)
	for _, c := range []struct {
		name string
		p    *picker
		ctx  context.Context
	}{
		{"ejection=off", off, context.Background()},
		{"ejection=on", on, context.Background()},
		{"ejection=on,retry-interceptor", on, nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				ctx := c.ctx
				if ctx == nil {
					ctx = withTried(context.Background()) // one per RPC, as the interceptor does
				}
				res, _ := c.p.Pick(balancer.PickInfo{Ctx: ctx})
				if res.Done != nil {
					res.Done(balancer.DoneInfo{})
				}
			}
		})
	}
}
