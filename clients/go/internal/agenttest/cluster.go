package agenttest

import (
	"bytes"
	"context"
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
	"testing"
	"time"
)

// The real test control plane (scripts/testcluster: an API server and
// kube-controller-manager, no kubelet), driven with its own kubectl. A
// test gets a namespace of its own, creates a Service with a selector and
// Pods, and does what a kubelet would: it gives the Pods IPs and marks
// them Ready or not through the status subresource, so the EndpointSlice
// controller builds the slices the agent then serves.
//
// The API server refuses loopback addresses in EndpointSlices, so the
// Pods get 10.133.<r>.<i> and the test servers listen on 127.33.<r>.<i>;
// clients dial through DialPod, which maps one onto the other and dials
// nothing that is not loopback.

// podPrefix and loopbackPrefix are the Pod IP prefix and the loopback
// prefix DialPod maps it to.
const (
	podPrefix      = "10.133."
	loopbackPrefix = "127.33."
)

// clusterNodes are the Nodes the Pods are placed on: the EndpointSlice
// controller skips Pods whose Node does not exist. The same names and
// zones as the Rust tests' (tests/it/support/kube.rs).
var clusterNodes = [][2]string{{"node-a", "zone-a"}, {"node-b", "zone-b"}, {"node-c", "zone-c"}}

var kubectlBin struct {
	once  sync.Once
	path  string
	err   error
	nodes error
}

// Cluster is a namespace of one test's own on the test control plane.
type Cluster struct {
	t testing.TB
	// Namespace is the test's namespace, deleted when the test ends.
	Namespace  string
	kubeconfig string
	kubectl    string
	// r is the third octet of the test's Pod IPs and loopback addresses.
	r byte
}

// NewCluster creates a namespace kd-go-<name>-<random> on the control
// plane $KUBECONFIG points at, and deletes it (its Pods at once) when the
// test ends. The test is skipped when KUBECONFIG is unset (scripts/test
// sets it).
func NewCluster(t testing.TB, name string) *Cluster {
	t.Helper()
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		t.Skip("KUBECONFIG is unset: no test control plane (scripts/test sets it; or run scripts/testcluster up and export KUBECONFIG=<repo>/.testcluster/admin.kubeconfig)")
	}
	kubectlBin.once.Do(func() {
		kubectlBin.path, kubectlBin.err = findKubectl()
		if kubectlBin.err == nil {
			kubectlBin.nodes = ensureNodes(kubectlBin.path, kubeconfig)
		}
	})
	if kubectlBin.err != nil {
		t.Fatalf("kubectl of the test control plane: %v", kubectlBin.err)
	}
	if kubectlBin.nodes != nil {
		t.Fatalf("creating the test Nodes: %v", kubectlBin.nodes)
	}
	c := &Cluster{
		t:          t,
		Namespace:  fmt.Sprintf("kd-go-%s-%x", name, rand.Uint32()),
		kubeconfig: kubeconfig,
		kubectl:    kubectlBin.path,
		r:          byte(1 + rand.IntN(254)),
	}
	c.run("", "create", "namespace", c.Namespace)
	t.Cleanup(func() {
		// No kubelet confirms that a Pod stopped: without --force and a
		// zero grace period the Pods, and so the namespace, would stay
		// Terminating.
		_, _ = c.exec("", "delete", "pods", "--all", "--force", "--grace-period=0", "-n", c.Namespace)
		_, _ = c.exec("", "delete", "namespace", c.Namespace, "--wait=false")
	})
	// The ServiceAccount admission plugin refuses Pods until the
	// namespace's default account exists.
	if !Until(30*time.Second, func() bool {
		_, err := c.exec("", "get", "serviceaccount", "default", "-n", c.Namespace)
		return err == nil
	}) {
		t.Fatalf("namespace %s: no default ServiceAccount within 30s", c.Namespace)
	}
	return c
}

// findKubectl returns the kubectl that `scripts/testcluster bin-dir`
// names.
func findKubectl() (string, error) {
	repo, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(repo, "scripts", "testcluster"), "bin-dir").Output()
	if err != nil {
		return "", fmt.Errorf("scripts/testcluster bin-dir: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := filepath.Join(strings.TrimSpace(lines[len(lines)-1]), "kubectl")
	if _, err := os.Stat(bin); err != nil {
		return "", err
	}
	return bin, nil
}

// ensureNodes applies the shared Nodes (apply: the Rust tests and other
// packages make the same ones).
func ensureNodes(kubectl, kubeconfig string) error {
	var b strings.Builder
	for _, n := range clusterNodes {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels: {topology.kubernetes.io/zone: %s, kubernetes.io/hostname: %s}\n", n[0], n[1], n[0])
	}
	cmd := exec.Command(kubectl, "apply", "-f", "-")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (c *Cluster) exec(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

func (c *Cluster) run(stdin string, args ...string) {
	c.t.Helper()
	if _, err := c.exec(stdin, args...); err != nil {
		c.t.Fatal(err)
	}
}

// Loopback is where the server of the test's i-th Pod listens
// (127.33.<r>.<i+1>).
func (c *Cluster) Loopback(i int) string { return fmt.Sprintf("%s%d.%d", loopbackPrefix, c.r, i+1) }

// PodIP is the test's i-th Pod's IP (10.133.<r>.<i+1>).
func (c *Cluster) PodIP(i int) string { return fmt.Sprintf("%s%d.%d", podPrefix, c.r, i+1) }

// PodSpec is one Pod for ServePods.
type PodSpec struct {
	// Ports maps container port names to the ports its servers listen on.
	Ports map[string]int
	// Weight is the kubedisco.io/weight label; empty for none.
	Weight string
}

// Pod is one Pod ServePods made.
type Pod struct {
	Name string
	// IP is the Pod's IP; Loopback is where its servers listen.
	IP, Loopback string
}

// ServePods creates a headless Service app selecting app=<app>, with the
// named ports (each targets the container port of that name), and a Pod
// app-<i> per spec, placed on the shared Nodes in turn, and marks them
// all Ready at PodIP(i).
func (c *Cluster) ServePods(app string, ports []string, specs ...PodSpec) []Pod {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  clusterIP: None\n  selector: {app: %s}\n  ports:\n", app, app)
	for i, p := range ports {
		fmt.Fprintf(&b, "  - {name: %s, port: %d, targetPort: %s}\n", p, 9000+i, p)
	}
	pods := make([]Pod, len(specs))
	for i, s := range specs {
		pods[i] = c.writePod(&b, app, i, s)
	}
	c.run(b.String(), "apply", "-n", c.Namespace, "-f", "-")
	for _, p := range pods {
		c.SetReady(p, true)
	}
	return pods
}

// AddPod creates one more Pod app-<i> of app (a scale-up: i past the
// Pods ServePods made) and marks it Ready at PodIP(i).
func (c *Cluster) AddPod(app string, i int, spec PodSpec) Pod {
	c.t.Helper()
	var b strings.Builder
	p := c.writePod(&b, app, i, spec)
	c.run(b.String(), "apply", "-n", c.Namespace, "-f", "-")
	c.SetReady(p, true)
	return p
}

// writePod writes the manifest of Pod app-<i> (after a "---") to b: label
// app=<app>, spec's weight label and container ports, on the i-th shared
// Node in turn.
func (c *Cluster) writePod(b *strings.Builder, app string, i int, s PodSpec) Pod {
	p := Pod{Name: fmt.Sprintf("%s-%d", app, i), IP: c.PodIP(i), Loopback: c.Loopback(i)}
	labels := "app: " + app
	if s.Weight != "" {
		labels += fmt.Sprintf(", kubedisco.io/weight: %q", s.Weight)
	}
	fmt.Fprintf(b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  labels: {%s}\nspec:\n  nodeName: %s\n  containers:\n  - name: app\n    image: example.invalid/app:1\n    ports:\n",
		p.Name, labels, clusterNodes[i%len(clusterNodes)][0])
	for _, name := range slices.Sorted(maps.Keys(s.Ports)) {
		fmt.Fprintf(b, "    - {name: %s, containerPort: %d}\n", name, s.Ports[name])
	}
	return p
}

// ServeWeighted starts a server per weight with start, which gets the
// Pod's loopback address and returns its servers' ports by name; serves
// them as app with ServePods (weight 0: no kubedisco.io/weight label);
// and waits until agent shows the Pods (with their weights when every
// Pod has one).
func (c *Cluster) ServeWeighted(agent *Agent, app string, ports []string, weights []uint32, start func(loopback string) map[string]int) []Pod {
	c.t.Helper()
	specs := make([]PodSpec, len(weights))
	want := map[string]uint32{}
	var ips []string
	for i, w := range weights {
		specs[i].Ports = start(c.Loopback(i))
		if w != 0 {
			specs[i].Weight = fmt.Sprint(w)
			want[c.PodIP(i)] = w
		}
		ips = append(ips, c.PodIP(i))
	}
	pods := c.ServePods(app, ports, specs...)
	shown := HasIPs(ips...)
	if len(want) == len(weights) {
		shown = HasWeights(want)
	}
	agent.WaitService(c.Namespace, app, 30*time.Second, shown)
	return pods
}

// SetReady reports the Pod running at its IP, Ready or not, as a kubelet
// would (the status subresource).
func (c *Cluster) SetReady(p Pod, ready bool) {
	c.t.Helper()
	status := "False"
	if ready {
		status = "True"
	}
	patch := fmt.Sprintf(`{"status":{"phase":"Running","podIP":%q,"podIPs":[{"ip":%q}],"conditions":[{"type":"Ready","status":%q},{"type":"ContainersReady","status":%q}]}}`,
		p.IP, p.IP, status, status)
	c.run("", "patch", "pod", p.Name, "-n", c.Namespace, "--subresource=status", "--type=merge", "-p", patch)
}

// DeletePod deletes the Pod at once (no kubelet would confirm a graceful
// delete).
func (c *Cluster) DeletePod(p Pod) {
	c.t.Helper()
	c.run("", "delete", "pod", p.Name, "-n", c.Namespace, "--force", "--grace-period=0")
}

// StartAgent starts an agent on the control plane (--source kubernetes),
// watching the test's namespace only; extra arguments (--pod-weights, say)
// are appended. It waits until the agent is ready, and stops it when the
// test ends.
func (c *Cluster) StartAgent(extra ...string) *Agent {
	c.t.Helper()
	return startAgent(c.t, []string{"--source", "kubernetes", "--namespaces", c.Namespace},
		[]string{"KUBECONFIG=" + c.kubeconfig}, "/readyz", extra)
}

// DialPod dials a Pod's address on its server's loopback address: a
// 10.133. address is dialled as 127.33., and anything that is not loopback
// then is refused, so the tests never reach outside the machine.
func DialPod(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(host, podPrefix); ok {
		host = loopbackPrefix + rest
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("refusing to dial %s: not a loopback address", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(host, port))
}

// PodTransport is an http.Transport that dials through DialPod; its idle
// connections are closed when the test ends.
func PodTransport(t testing.TB) *http.Transport {
	tr := &http.Transport{DialContext: DialPod, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}
