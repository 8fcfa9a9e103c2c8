package kubedisco_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// TestExampleManifests keeps examples/go-grpc's manifests what its README
// says they are.
func TestExampleManifests(t *testing.T) {
	repo, err := agenttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(repo, "examples", "go-grpc", "manifests", "greeter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	agent := agenttest.StartAgent(t)
	agent.WriteManifest("greeter.yaml", string(text))
	agent.WaitService("demo", "greeter", 10*time.Second, agenttest.HasIPs("127.0.0.2", "127.0.0.3"))
	eps, err := agent.Client.Lookup(context.Background(), "greeter.demo")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"127.0.0.2:9090": 100, "127.0.0.3:9090": 300}
	for _, e := range eps {
		addr, _ := e.Address("grpc")
		if w, ok := want[addr]; !ok || w != e.Weight {
			t.Errorf("example endpoint %s weight %d; want %v", addr, e.Weight, want)
		}
	}
}
