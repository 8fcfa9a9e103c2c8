package kratos

import (
	"context"
	"errors"
	"net/http"
	"time"

	kerrors "github.com/go-kratos/kratos/v2/errors"
	"github.com/go-kratos/kratos/v2/middleware"
	"github.com/go-kratos/kratos/v2/transport"
	transhttp "github.com/go-kratos/kratos/v2/transport/http"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Retry returns a Kratos client middleware that tries a failed idempotent
// call again on another instance, as kubedisco.Transport does:
//
//   - gRPC (transport/grpc): a call ending with UNAVAILABLE (which is also
//     what a refused or broken connection gives) is retried; gRPC has no
//     idempotent methods, so every unary call is (as kdgrpc's retry policy
//     does).
//   - HTTP (transport/http, Invoke): GET, HEAD, OPTIONS and TRACE, or any
//     request with an Idempotency-Key header, are retried after an answer
//     502, 503 or 504, or no answer at all (connection refused or broken).
//   - Both: a try that ran out of r.PerTryTimeout while the caller's
//     context is still alive is retried.
//
// A call makes at most r.MaxAttempts tries (default 3) within a budget per
// Service: retries add at most r.RetryRatio of the calls (default 20%)
// plus r.RetryBurst (10). The caller's context (and the Kratos client's
// timeout, which covers the whole call) bounds all tries together,
// r.PerTryTimeout each one. The Service's kubedisco.io/retry-max-attempts
// annotation overrides MaxAttempts (see WithClient); r.Off or one attempt
// turns retries off.
//
// Retries go to an instance the call has not tried only when the client's
// selector is NewSelector's (selector.SetGlobalSelector); with another
// one they go wherever it picks.
//
//	conn, err := grpc.DialInsecure(ctx,
//		grpc.WithEndpoint("discovery:///orders.shop"),
//		grpc.WithDiscovery(dis),
//		grpc.WithMiddleware(kratos.Retry(nil)))
func Retry(r *kubedisco.Resilience, opts ...Option) middleware.Middleware {
	ps := newPolicies(r, opts)
	return func(next middleware.Handler) middleware.Handler {
		return func(ctx context.Context, req any) (any, error) {
			tr, ok := transport.FromClientContext(ctx)
			if !ok {
				return next(ctx, req)
			}
			p := ps.get(serviceOf(tr.Endpoint()))
			cfg := p.Current(ctx)
			if cfg.Off {
				return next(ctx, req)
			}
			p.Deposit(&cfg)
			attempts := cfg.MaxAttempts
			httpReq := httpRequest(tr)
			if tr.Kind() == transport.KindHTTP && (httpReq == nil || !kubedisco.IdempotentRequest(httpReq)) {
				attempts = 1
			}
			ctx = withCall(ctx)
			for attempt := 1; ; attempt++ {
				if attempt > 1 && httpReq != nil && httpReq.GetBody != nil {
					body, err := httpReq.GetBody()
					if err != nil {
						return nil, err
					}
					httpReq.Body = body
				}
				reply, timedOut, err := try(ctx, req, next, cfg.PerTryTimeout)
				if err == nil || attempt >= attempts || ctx.Err() != nil || !(timedOut || retryable(err, tr.Kind())) || !p.Withdraw() {
					return reply, err
				}
			}
		}
	}
}

// try makes one try, within perTry when it is set; timedOut says the try
// ran out of its own time (rather than the caller's).
func try(ctx context.Context, req any, next middleware.Handler, perTry time.Duration) (reply any, timedOut bool, err error) {
	if perTry <= 0 {
		reply, err = next(ctx, req)
		return reply, false, err
	}
	tctx, cancel := context.WithTimeout(ctx, perTry)
	defer cancel()
	reply, err = next(tctx, req)
	return reply, err != nil && ctx.Err() == nil && tctx.Err() != nil, err
}

// retryable says whether a try's error is worth a try elsewhere.
func retryable(err error, kind transport.Kind) bool {
	if kind == transport.KindGRPC {
		return status.Code(err) == codes.Unavailable
	}
	var ke *kerrors.Error
	if errors.As(err, &ke) {
		switch ke.Code {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	// No HTTP answer (Kratos turns every answer into an *errors.Error):
	// the connection was refused or broke, or the body could not be read.
	return true
}

// httpRequest returns the request of a Kratos HTTP call, nil for gRPC.
func httpRequest(tr transport.Transporter) *http.Request {
	if ht, ok := tr.(*transhttp.Transport); ok {
		return ht.Request()
	}
	return nil
}
