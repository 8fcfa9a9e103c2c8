package kdgrpc

import (
	"encoding/json"
	"strings"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Per-Service overrides. An operator tunes a Service's ejection and retries
// with annotations (kubedisco.io/outlier-*, kubedisco.io/retry-*); the agent
// validates them and serves them with the Service's endpoints, and the
// resolver hands gRPC a service config for the target: ServiceConfig with
// the overrides applied. gRPC takes a resolver's service config in place of
// the channel's default one (grpc.WithDefaultServiceConfig), so the
// resolver sends one only for a Service that has overrides; once it has
// sent one it keeps sending one (plain ServiceConfig after the annotations
// are removed), because gRPC keeps the last resolver config rather than go
// back to the default. grpc.WithDisableServiceConfig() makes a channel
// ignore the annotations.

type serviceConfigJSON struct {
	LoadBalancingConfig []map[string]*LBConfig `json:"loadBalancingConfig"`
	MethodConfig        []methodConfigJSON     `json:"methodConfig,omitempty"`
	RetryThrottling     *retryThrottlingJSON   `json:"retryThrottling,omitempty"`
}

type methodConfigJSON struct {
	Name        []struct{}       `json:"name"`
	RetryPolicy *retryPolicyJSON `json:"retryPolicy"`
}

type retryPolicyJSON struct {
	MaxAttempts          uint32   `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

type retryThrottlingJSON struct {
	MaxTokens  float64 `json:"maxTokens"`
	TokenRatio float64 `json:"tokenRatio"`
}

// configWithOverrides returns ServiceConfig with o applied (ServiceConfig's
// settings when o is nil).
func configWithOverrides(o *kubedisco.ServiceResilience) string {
	od := &OutlierConfig{}
	retry := &retryPolicyJSON{
		MaxAttempts:          3,
		InitialBackoff:       "0.005s",
		MaxBackoff:           "0.05s",
		BackoffMultiplier:    2,
		RetryableStatusCodes: []string{"UNAVAILABLE"},
	}
	if o != nil && o.Outlier != nil {
		x := o.Outlier
		od.ConsecutiveFailures = x.ConsecutiveFailures
		if x.FailurePercentage != nil {
			od.FailurePercentage = &FailurePercentage{Threshold: x.FailurePercentage}
		}
		od.Interval, od.BaseEjectionTime, od.MaxEjectionTime = x.Interval, x.BaseEjectionTime, x.MaxEjectionTime
		od.MaxEjectionPercent = x.MaxEjectionPercent
	}
	if o != nil && o.Retry != nil {
		if n := o.Retry.MaxAttempts; n != nil {
			retry.MaxAttempts = *n
		}
		if len(o.Retry.On) > 0 {
			retry.RetryableStatusCodes = nil
			for _, code := range o.Retry.On {
				// Envoy's spelling ("resource-exhausted") to gRPC's.
				retry.RetryableStatusCodes = append(retry.RetryableStatusCodes,
					strings.ToUpper(strings.ReplaceAll(code, "-", "_")))
			}
		}
	}
	sc := serviceConfigJSON{LoadBalancingConfig: []map[string]*LBConfig{{Name: {OutlierDetection: od}}}}
	// gRPC refuses a retry policy of one attempt: no retries is no policy.
	if retry.MaxAttempts > 1 {
		sc.MethodConfig = []methodConfigJSON{{Name: []struct{}{{}}, RetryPolicy: retry}}
		sc.RetryThrottling = &retryThrottlingJSON{MaxTokens: 100, TokenRatio: 0.2}
	}
	out, err := json.Marshal(sc)
	if err != nil {
		panic(err) // plain structs: cannot fail
	}
	return string(out)
}
