// Package agenttest runs real kubedisco agents for the module's tests, and
// fake ones (a scripted watch stream) for the unit tests of reconnection and
// malformed data.
package agenttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// EnvBin names the environment variable that may point at the agent binary.
const EnvBin = "KUBEDISCO_BIN"

var build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the kubedisco binary: $KUBEDISCO_BIN, else
// $CARGO_TARGET_DIR/debug/kubedisco, else <repo>/target/debug/kubedisco,
// which is built with cargo when it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = findBinary() })
	if build.err != nil {
		t.Fatalf("kubedisco agent binary: %v", build.err)
	}
	return build.path
}

func findBinary() (string, error) {
	if bin := os.Getenv(EnvBin); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBin, bin, err)
		}
		return bin, nil
	}
	repo, err := RepoRoot()
	if err != nil {
		return "", err
	}
	target := os.Getenv("CARGO_TARGET_DIR")
	if target == "" {
		target = filepath.Join(repo, "target")
	} else if !filepath.IsAbs(target) {
		target = filepath.Join(repo, target)
	}
	bin := filepath.Join(target, "debug", "kubedisco")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("cargo", "build", "--bin", "kubedisco")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s is missing and cargo build failed: %v\n%s", bin, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("cargo build did not produce %s", bin)
	}
	return bin, nil
}

// RepoRoot returns the kubedisco repository: the directory above this
// module that holds Cargo.toml.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "Cargo.toml")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "clients", "go", "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the kubedisco repository (no Cargo.toml above clients/go)")
		}
		dir = parent
	}
}

// FreePort returns a TCP port that was free on ip a moment ago.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// agentAddresses returns an HTTP and a DNS address for one agent: a loopback
// address of its own (127.64.0.1-127.127.255.254) and two ports free on it,
// held together while chosen so they differ. The agent's sockets use
// SO_REUSEPORT (for hand-over), so two agents that got the same port between
// FreePort's check and their bind would silently share it, each answering
// half the connections; with an address per agent that needs the same
// address too.
func agentAddresses(t testing.TB) (httpAddr, dnsAddr string) {
	t.Helper()
	ip := net.IPv4(127, byte(64+rand.IntN(64)), byte(rand.IntN(256)), byte(1+rand.IntN(254))).String()
	var listeners [2]net.Listener
	for i := range listeners {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free port on %s: %v", ip, err)
		}
		defer l.Close()
		listeners[i] = l
	}
	return listeners[0].Addr().String(), listeners[1].Addr().String()
}

// Agent is a real kubedisco agent serving the manifests in Dir.
type Agent struct {
	t testing.TB
	// Dir is the manifest directory the agent reads (--source); empty for
	// StartUnsyncedAgent.
	Dir string
	// HTTPAddr is the agent's HTTP address (host:port).
	HTTPAddr string
	// Client talks to the agent.
	Client *kubedisco.Client

	args []string
	env  []string
	// readyPath answers 200 once the agent is up as the test wants it.
	readyPath string
	log       *os.File
	cmd       *exec.Cmd
	done      chan struct{}
}

// StartAgent starts an agent on free loopback ports, serving an empty
// manifest directory; extra arguments are appended to `kubedisco agent`.
// It waits until the agent is ready, and stops it when the test ends.
func StartAgent(t testing.TB, extra ...string) *Agent {
	t.Helper()
	dir := t.TempDir()
	source := []string{"--source", dir, "--manifest-poll-interval", "100ms"}
	a := startAgent(t, source, nil, "/readyz", extra)
	a.Dir = dir
	return a
}

// StartUnsyncedAgent starts an agent that never completes its first sync:
// its Kubernetes source's kubeconfig points at a loopback port where
// nothing listens. It waits until the agent is alive (/healthz), and stops
// it when the test ends.
func StartUnsyncedAgent(t testing.TB, extra ...string) *Agent {
	t.Helper()
	closed := FreePort(t, "127.0.0.1")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: closed, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: nobody, user: {token: none}}]
contexts: [{name: closed, context: {cluster: closed, user: nobody}}]
current-context: closed
`, closed)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startAgent(t, []string{"--source", "kubernetes"}, []string{"KUBECONFIG=" + kubeconfig}, "/healthz", extra)
}

func startAgent(t testing.TB, source, env []string, readyPath string, extra []string) *Agent {
	t.Helper()
	bin := Binary(t)
	httpAddr, dnsAddr := agentAddresses(t)
	log, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubedisco.NewClient(httpAddr, kubedisco.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{bin, "agent"}, source...)
	args = append(args, "--http-addr", httpAddr, "--dns-addr", dnsAddr, "--shutdown-grace", "2s")
	a := &Agent{
		t:         t,
		HTTPAddr:  httpAddr,
		Client:    client,
		log:       log,
		args:      append(args, extra...),
		env:       env,
		readyPath: readyPath,
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			logText, _ := os.ReadFile(log.Name())
			t.Logf("agent log:\n%s", tail(logText, 4000))
		}
		log.Close()
	})
	a.Start()
	return a
}

// Start starts the agent process (again) and waits until it is ready (or,
// for StartUnsyncedAgent, alive).
func (a *Agent) Start() {
	a.t.Helper()
	cmd := exec.Command(a.args[0], a.args[1:]...)
	cmd.Stdout, cmd.Stderr = a.log, a.log
	cmd.Env = append(append(os.Environ(), "RUST_LOG=info"), a.env...)
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start agent: %v", err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	done := a.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			a.t.Fatalf("agent exited during start-up: %v", cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + a.HTTPAddr + a.readyPath)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent: %s not 200 after 30s (last: %v)", a.readyPath, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the agent with SIGTERM and waits for it to exit (SIGKILL after
// 10s). It does nothing when the agent is not running.
func (a *Agent) Stop() {
	if a.cmd == nil {
		return
	}
	cmd, done := a.cmd, a.done
	a.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		a.t.Errorf("agent ignored SIGTERM for 10s")
	}
}

// WriteManifest (re)writes file name in Dir atomically, so the agent never
// reads half of it.
func (a *Agent) WriteManifest(name, content string) {
	a.t.Helper()
	tmp := filepath.Join(a.Dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.Dir, name)); err != nil {
		a.t.Fatal(err)
	}
}

// WaitService polls the agent until cond holds for the Service's state,
// and returns that state and when it was first seen.
func (a *Agent) WaitService(namespace, name string, timeout time.Duration, cond func(*kubedisco.Service) bool) (*kubedisco.Service, time.Time) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		svc, err := a.Client.Service(context.Background(), namespace, name)
		if errors.Is(err, kubedisco.ErrServiceNotFound) {
			svc, err = &kubedisco.Service{Namespace: namespace, Name: name}, nil
		}
		if err == nil && cond(svc) {
			return svc, time.Now()
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	a.t.Fatalf("agent: %s/%s did not reach the expected state within %s (last error: %v)", namespace, name, timeout, last)
	return nil, time.Time{}
}

// HasIPs reports whether the Service's endpoints are exactly ips.
func HasIPs(ips ...string) func(*kubedisco.Service) bool {
	return func(svc *kubedisco.Service) bool {
		if len(svc.Endpoints) != len(ips) {
			return false
		}
		want := map[string]bool{}
		for _, ip := range ips {
			want[ip] = true
		}
		for _, e := range svc.Endpoints {
			if !want[e.IP.String()] {
				return false
			}
		}
		return true
	}
}

// HasWeights reports whether the Service's endpoints are exactly the
// addresses weights has, each with its weight.
func HasWeights(weights map[string]uint32) func(*kubedisco.Service) bool {
	return func(svc *kubedisco.Service) bool {
		if len(svc.Endpoints) != len(weights) {
			return false
		}
		for _, e := range svc.Endpoints {
			if w, ok := weights[e.IP.String()]; !ok || e.Weight != w {
				return false
			}
		}
		return true
	}
}

// Slice is one EndpointSlice for ServiceYAML.
type Slice struct {
	// Name of the slice (unique in the Service).
	Name string
	// Weight is the kubedisco.io/weight annotation; empty for none.
	Weight string
	// Ports maps port names to port numbers.
	Ports map[string]int
	// Endpoints of the slice.
	Endpoints []SliceEndpoint
}

// SliceEndpoint is one endpoint of a Slice.
type SliceEndpoint struct {
	// IP is the endpoint's address.
	IP string
	// Zone is the endpoint's zone; empty for none.
	Zone string
	// NotReady sets conditions.ready false.
	NotReady bool
}

// ServiceYAML renders a headless Service with the given port names and its
// EndpointSlices as Kubernetes YAML.
func ServiceYAML(namespace, name string, ports []string, endpointSlices ...Slice) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  clusterIP: None\n  ports:\n", name, namespace)
	for i, p := range ports {
		fmt.Fprintf(&b, "  - {name: %s, port: %d}\n", p, 9000+i)
	}
	for _, s := range endpointSlices {
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {kubernetes.io/service-name: %s}\n", s.Name, namespace, name)
		if s.Weight != "" {
			fmt.Fprintf(&b, "  annotations: {kubedisco.io/weight: %q}\n", s.Weight)
		}
		b.WriteString("addressType: IPv4\nports:\n")
		for _, p := range slices.Sorted(maps.Keys(s.Ports)) {
			fmt.Fprintf(&b, "- {name: %s, port: %d, protocol: TCP}\n", p, s.Ports[p])
		}
		b.WriteString("endpoints:\n")
		for _, e := range s.Endpoints {
			fmt.Fprintf(&b, "- addresses: [%s]\n  conditions: {ready: %t}\n", e.IP, !e.NotReady)
			if e.Zone != "" {
				fmt.Fprintf(&b, "  zone: %s\n", e.Zone)
			}
		}
	}
	return b.String()
}

// Annotate adds annotations to the Service of a ServiceYAML manifest (its
// metadata line, the one before "spec:").
func Annotate(manifest string, annotations map[string]string) string {
	if len(annotations) == 0 {
		return manifest
	}
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		pairs = append(pairs, fmt.Sprintf("%s: %q", k, annotations[k]))
	}
	return strings.Replace(manifest, "}\nspec:", ", annotations: {"+strings.Join(pairs, ", ")+"}}\nspec:", 1)
}

func tail(b []byte, n int) string {
	s := string(b)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.TrimRight(s, "\n")
}

// CountCalls makes n calls from 4 goroutines and counts them by the
// address each call returns; failed calls are counted apart.
func CountCalls(n int, call func() (string, error)) (counts map[string]int, failed int) {
	var mu sync.Mutex
	counts = map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				addr, err := call()
				mu.Lock()
				if err != nil {
					failed++
				} else {
					counts[addr]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts, failed
}

// Until polls cond every 10ms until it holds; false after timeout.
func Until(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
