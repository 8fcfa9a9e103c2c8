package kubedisco_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// Against the real control plane: an agent with --source kubernetes, a
// Service with a selector and Pods the EndpointSlice controller publishes
// once the test marks them Ready; HTTP servers listen on the Pods'
// loopback addresses, and an http.Client with kubedisco.Transport (the
// defaults: ejection and retries on) calls http://web.<ns>.svc/.

// clusterWeb starts an HTTP server per weight on the Pods' loopback
// addresses, serves them as the Service web (port http, Pod labels
// kubedisco.io/weight), waits until the agent shows them with their
// weights, and returns them, their Pods and a GET through the Transport
// that returns the server that answered.
func clusterWeb(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, delay time.Duration, weights []uint32) ([]*flakyWeb, []agenttest.Pod, func() (string, error)) {
	t.Helper()
	var bs []*flakyWeb
	pods := c.ServeWeighted(agent, "web", []string{"http"}, weights, func(ip string) map[string]int {
		b := startFlakyWeb(t, ip, delay)
		bs = append(bs, b)
		return map[string]int{"http": b.port}
	})
	client := &http.Client{Transport: &kubedisco.Transport{Client: agent.Client, Port: "http", Base: agenttest.PodTransport(t)}}
	url := "http://web." + c.Namespace + ".svc/"
	get := func() (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		// The server answers "<its address> <request body>".
		addr, _, _ := strings.Cut(string(body), " ")
		return addr, err
	}
	return bs, pods, get
}

// TestTransportClusterWeightsReadinessAndScale: two Pods labelled with
// weights 1 and 3 (--pod-weights) get 25% / 75% of 20 000 GETs by the
// agent's weighted pick; the light one marked not Ready gets no more
// GETs, and Ready again gets them back; a third Pod created gets GETs,
// and deleted gets none, with no GET failing.
func TestTransportClusterWeightsReadinessAndScale(t *testing.T) {
	c := agenttest.NewCluster(t, "transport-weights")
	agent := c.StartAgent("--pod-weights")
	bs, pods, get := clusterWeb(t, c, agent, 0, []uint32{1, 3})
	agenttest.CheckWeights(t, "Transport", 20000, get, bs[0].addr, bs[1].addr)
	c.CheckReadiness(t, "Transport", pods[0], bs[0].addr, get)
	third := startFlakyWeb(t, c.Loopback(2), 0)
	c.CheckScale(t, "Transport", "web", 2, agenttest.PodSpec{Ports: map[string]int{"http": third.port}, Weight: "1"}, third.addr, get)
}

// TestTransportClusterKilledPod: three Ready Pods, GETs from 8 goroutines;
// one Pod's server is killed with GETs in flight (Kubernetes still lists
// it Ready). The Transport's defaults retry them, and the ones sent there
// until it is ejected, on another Pod: no GET fails.
func TestTransportClusterKilledPod(t *testing.T) {
	c := agenttest.NewCluster(t, "transport-kill")
	agent := c.StartAgent()
	bs, _, get := clusterWeb(t, c, agent, 20*time.Millisecond, []uint32{100, 100, 100})
	victim := bs[0]
	agenttest.KillUnderLoad(t, "Transport", 8, func() error { _, err := get(); return err },
		func() bool { return victim.hits.Load() >= 8 }, func() { victim.srv.Close() })
}
