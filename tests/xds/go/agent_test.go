package xdstest

// A real kubedisco agent (manifest source, polled every 100ms, --xds-addr
// on) and real grpc-go servers on loopback addresses; the client is
// grpc-go's own xDS client, bootstrapped by `kubedisco xds-bootstrap`.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// binary is $KUBEDISCO_BIN, else $CARGO_TARGET_DIR/debug/kubedisco, else
// the repository's target/debug/kubedisco.
func binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("KUBEDISCO_BIN"); bin != "" {
		return bin
	}
	dir := os.Getenv("CARGO_TARGET_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "target")
	}
	bin, err := filepath.Abs(filepath.Join(dir, "debug", "kubedisco"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no agent binary (cargo build first, or set KUBEDISCO_BIN): %v", err)
	}
	return bin
}

var probe = http.Client{Timeout: time.Second}

type agent struct {
	t        testing.TB
	dir      string
	args     []string
	httpAddr string
	xdsAddr  string
	log      *os.File
	cmd      *exec.Cmd
	done     chan struct{}
}

// startAgent starts an agent on an address of its own (so ports it closes
// are not taken by another test's agent) and stops it when the test ends.
func startAgent(t testing.TB, extra ...string) *agent {
	t.Helper()
	ip := net.IPv4(127, byte(64+rand.IntN(64)), byte(rand.IntN(256)), byte(1+rand.IntN(254))).String()
	addrs := freeAddrs(t, ip, 3)
	log, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, dir: t.TempDir(), httpAddr: addrs[0], xdsAddr: addrs[2], log: log}
	a.args = append([]string{binary(t), "agent", "--source", a.dir, "--manifest-poll-interval", "100ms",
		"--http-addr", addrs[0], "--dns-addr", addrs[1], "--xds-addr", addrs[2], "--shutdown-grace", "2s"}, extra...)
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			text, _ := os.ReadFile(log.Name())
			if len(text) > 6000 {
				text = text[len(text)-6000:]
			}
			t.Logf("agent log:\n%s", text)
		}
	})
	a.start()
	return a
}

// freeAddrs returns n distinct ports free on ip a moment ago (held
// together while chosen, closed before the agent binds them).
func freeAddrs(t testing.TB, ip string, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

func (a *agent) start() {
	a.t.Helper()
	cmd := exec.Command(a.args[0], a.args[1:]...)
	cmd.Stdout, cmd.Stderr = a.log, a.log
	cmd.Env = append(os.Environ(), "RUST_LOG=info,kubedisco::xds=debug")
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	done := a.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			a.t.Fatalf("agent exited during start-up: %v", cmd.ProcessState)
		default:
		}
		resp, err := probe.Get("http://" + a.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent not ready after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *agent) stop() {
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
	}
}

// bootstrap is what `kubedisco xds-bootstrap` prints for this agent.
func (a *agent) bootstrap() []byte {
	a.t.Helper()
	out, err := exec.Command(a.args[0], "xds-bootstrap", "--xds-addr", a.xdsAddr, "--node-id", a.t.Name()).Output()
	if err != nil {
		a.t.Fatalf("xds-bootstrap: %v", err)
	}
	return out
}

// write (re)writes a manifest file atomically.
func (a *agent) write(name, content string) {
	a.t.Helper()
	tmp := filepath.Join(a.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.dir, name)); err != nil {
		a.t.Fatal(err)
	}
}

func (a *agent) remove(name string) {
	if err := os.Remove(filepath.Join(a.dir, name)); err != nil {
		a.t.Fatal(err)
	}
}

// endpoint is one backend as a manifest lists it: its own EndpointSlice.
type endpoint struct {
	addr   *net.TCPAddr
	weight int // 0: none
	zone   string
}

// manifest renders a headless Service with one port "grpc" and a slice
// per endpoint; annotations go on the Service.
func manifest(namespace, name string, annotations map[string]string, endpoints ...endpoint) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n", name, namespace)
	if len(annotations) > 0 {
		b.WriteString("  annotations:\n")
		for k, v := range annotations {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
	}
	b.WriteString("spec:\n  clusterIP: None\n  ports:\n  - {name: grpc, port: 9000}\n")
	for i, e := range endpoints {
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-%d\n  namespace: %s\n  labels: {kubernetes.io/service-name: %s}\n", name, i, namespace, name)
		if e.weight > 0 {
			fmt.Fprintf(&b, "  annotations: {kubedisco.io/weight: \"%d\"}\n", e.weight)
		}
		fmt.Fprintf(&b, "addressType: IPv4\nports:\n- {name: grpc, port: %d, protocol: TCP}\nendpoints:\n- addresses: [%s]\n  conditions: {ready: true}\n", e.addr.Port, e.addr.IP)
		if e.zone != "" {
			fmt.Fprintf(&b, "  zone: %s\n", e.zone)
		}
	}
	return b.String()
}
