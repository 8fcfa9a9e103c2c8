package kubedisco_test

import (
	"context"
	"testing"
	"time"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// BenchmarkAgentAnswer is the agent's answer each Transport request waits
// for, against a real agent over loopback: /v1/pick (nothing ejected) or
// the Service's state (something ejected, or a retry), 10 endpoints. It
// puts BenchmarkTransportPicker's figures in proportion.
func BenchmarkAgentAnswer(b *testing.B) {
	agent := agenttest.StartAgent(b)
	slice := agenttest.Slice{Name: "web", Ports: map[string]int{"http": 8080}}
	var ips []string
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5",
		"10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10"} {
		slice.Endpoints = append(slice.Endpoints, agenttest.SliceEndpoint{IP: ip})
		ips = append(ips, ip)
	}
	agent.WriteManifest("web.yaml", agenttest.ServiceYAML("e2e", "web", []string{"http"}, slice))
	agent.WaitService("e2e", "web", 10*time.Second, agenttest.HasIPs(ips...))
	ctx := context.Background()
	b.Run("pick", func(b *testing.B) {
		for b.Loop() {
			if _, err := agent.Client.Pick(ctx, "web.e2e", "http"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		for b.Loop() {
			if _, err := agent.Client.Service(ctx, "e2e", "web"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
