package kdgrpc

import (
	"context"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gRPC's retries go through the balancer's picker again, but nothing tells
// the picker that an attempt is a retry or where the earlier one went: with
// weights 1:3 the smooth round-robin sends two picks in a row to the heavy
// endpoint a third of the time. The interceptors below put a record of the
// endpoints an RPC has tried into its context (every attempt's pick sees
// the RPC's context), and the picker skips those while others are left.

type triedKey struct{}

// tried is the endpoints one RPC's attempts went to.
type tried struct {
	mu   sync.Mutex
	keys []string
}

func (t *tried) has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Contains(t.keys, key)
}

func (t *tried) add(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.keys, key) {
		t.keys = append(t.keys, key)
	}
}

func triedFrom(ctx context.Context) *tried {
	if ctx == nil {
		return nil
	}
	t, _ := ctx.Value(triedKey{}).(*tried)
	return t
}

func withTried(ctx context.Context) context.Context {
	if triedFrom(ctx) != nil {
		return ctx
	}
	return context.WithValue(ctx, triedKey{}, &tried{})
}

// UnaryClientInterceptor makes the retries of each unary RPC go to an
// endpoint it has not tried yet, when there is one.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(withTried(ctx), method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streaming RPCs.
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(withTried(ctx), desc, cc, method, opts...)
	}
}

// DialOptions are what a channel to kubedisco targets needs: ServiceConfig
// (weighted balancing, outlier ejection, retries of UNAVAILABLE) and the
// interceptors that send retries to another endpoint. Transport
// credentials are the caller's to add:
//
//	conn, err := grpc.NewClient("kubedisco:///orders.shop:grpc",
//		append(kdgrpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(StreamClientInterceptor()),
	}
}

// InsecureDialOptions is DialOptions with plaintext transport (inside a
// cluster network that is encrypted below, or for tests).
func InsecureDialOptions() []grpc.DialOption {
	return append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
}
