package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// Dual-stack, so tests can create Services of either family or both
	// (ipFamilyPolicy); Services are IPv4 only unless they ask.
	serviceClusterIPRange = "10.96.0.0/16,fd00:10:96::/112"
	serviceClusterFirstIP = "10.96.0.1"

	nameEtcd       = "etcd"
	nameAPIServer  = "kube-apiserver"
	nameController = "kube-controller-manager"

	// Controllers run by kube-controller-manager. serviceaccount-token
	// issues the controllers' own credentials; serviceaccount creates the
	// "default" ServiceAccount that the ServiceAccount admission plugin
	// needs before it admits Pods into a namespace.
	controllers = "serviceaccount-token-controller,serviceaccount-controller," +
		"endpointslice-controller,endpointslice-mirroring-controller," +
		"namespace-controller,garbage-collector-controller"
)

// clusterState is <state>/state.json. Tests may read it; fields are only
// ever added. etcdURL, logDir, pkiDir and the processes' url, startedAt,
// stopped, stoppedAt and restarts were added later: fillDerived supplies
// the derived ones when an older file lacks them.
type clusterState struct {
	StateDir   string     `json:"stateDir"`
	BinDir     string     `json:"binDir"`
	APIServer  string     `json:"apiServer"`
	Kubeconfig string     `json:"kubeconfig"`
	Ports      ports      `json:"ports"`
	Processes  []procInfo `json:"processes"`
	StartedAt  time.Time  `json:"startedAt"`
	EtcdURL    string     `json:"etcdURL,omitempty"`
	LogDir     string     `json:"logDir,omitempty"`
	PKIDir     string     `json:"pkiDir,omitempty"`
}

type ports struct {
	EtcdClient        int `json:"etcdClient"`
	EtcdPeer          int `json:"etcdPeer"`
	APIServer         int `json:"apiServer"`
	ControllerManager int `json:"controllerManager"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState returns nil, nil when there is no state file.
func loadState(dir string) (*clusterState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st clusterState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	st.fillDerived()
	return &st, nil
}

// fillDerived sets the fields that follow from the ports and the state dir.
func (st *clusterState) fillDerived() {
	if st.EtcdURL == "" && st.Ports.EtcdClient != 0 {
		st.EtcdURL = fmt.Sprintf("http://127.0.0.1:%d", st.Ports.EtcdClient)
	}
	if st.LogDir == "" && st.StateDir != "" {
		st.LogDir = filepath.Join(st.StateDir, "logs")
	}
	if st.PKIDir == "" && st.StateDir != "" {
		st.PKIDir = filepath.Join(st.StateDir, "pki")
	}
	for i := range st.Processes {
		p := &st.Processes[i]
		if p.URL != "" {
			continue
		}
		switch p.Name {
		case nameEtcd:
			p.URL = st.EtcdURL
		case nameAPIServer:
			p.URL = st.APIServer
		case nameController:
			if st.Ports.ControllerManager != 0 {
				p.URL = fmt.Sprintf("https://127.0.0.1:%d", st.Ports.ControllerManager)
			}
		}
	}
}

func (st *clusterState) save() error {
	st.fillDerived()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath(st.StateDir), append(b, '\n'), 0o644)
}

func (st *clusterState) proc(name string) (procInfo, bool) {
	if p := st.procRef(name); p != nil {
		return *p, true
	}
	return procInfo{}, false
}

// procRef returns the recorded entry of name for updating, or nil.
func (st *clusterState) procRef(name string) *procInfo {
	for i := range st.Processes {
		if st.Processes[i].Name == name {
			return &st.Processes[i]
		}
	}
	return nil
}

// notRunning describes why a recorded component does not run.
func notRunning(p procInfo) error {
	if p.Stopped {
		return fmt.Errorf("%s is stopped (testcluster stop, since %s)", p.Name, p.StoppedAt.Local().Format(time.TimeOnly))
	}
	return fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID)
}

// adminClient is an HTTPS client for the API server with the admin
// certificate, read from <state>/pki.
func (st *clusterState) adminClient() (*http.Client, error) {
	files := newPKIFiles(filepath.Join(st.StateDir, "pki"))
	var pems [3][]byte
	for i, path := range []string{files.CACert, files.AdminCert, files.AdminKey} {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		pems[i] = b
	}
	return apiClient(pems[0], pems[1], pems[2])
}

// readyCheck returns the check that tells component name is ready: etcd's
// /health, the API server's /readyz, the controller manager's /healthz.
func (st *clusterState) readyCheck(ctx context.Context, name string) (check func() error, what string, err error) {
	switch name {
	case nameEtcd:
		c := &http.Client{Timeout: 2 * time.Second}
		return func() error {
			return httpCheck(ctx, c, st.EtcdURL+"/health", `"health":"true"`)
		}, "to report healthy", nil
	case nameAPIServer:
		c, err := st.adminClient()
		if err != nil {
			return nil, "", err
		}
		return func() error {
			return httpCheck(ctx, c, st.APIServer+"/readyz", "ok")
		}, "to answer /readyz", nil
	case nameController:
		c := insecureClient()
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", st.Ports.ControllerManager)
		return func() error {
			return httpCheck(ctx, c, url, "ok")
		}, "to serve /healthz", nil
	}
	return nil, "", fmt.Errorf("unknown component %q", name)
}

// insecureClient is for the controller manager, whose serving certificate
// is self-signed.
func insecureClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
}

// stopGroups orders shutdown: the API clients (controller manager) and the
// API server first, etcd last, so the API server never runs without its store.
func (st *clusterState) stopGroups() [][]procInfo {
	var first, last []procInfo
	for _, p := range st.Processes {
		if p.Name == nameEtcd {
			last = append(last, p)
		} else {
			first = append(first, p)
		}
	}
	return [][]procInfo{first, last}
}

// cleanState removes everything an earlier run left except the logs.
func cleanState(dir string) error {
	for _, name := range []string{"state.json", "etcd", "pki", "admin.kubeconfig", "controller-manager.kubeconfig"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago. All listeners are held open until every port is picked.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

var errPortTaken = errors.New("a picked port was taken by another process")

// startFailure describes a component that failed to start, with the tail
// of its log.
type startFailure struct {
	name, log, reason string
	portTaken         bool
}

func (e *startFailure) Error() string {
	return fmt.Sprintf("%s %s\n--- last lines of %s ---\n%s\n---", e.name, e.reason, e.log, tailFile(e.log, 40))
}

func (e *startFailure) Is(target error) bool { return target == errPortTaken && e.portTaken }

func failure(r *running, reason string) error {
	tail := tailFile(r.info.Log, 200)
	return &startFailure{
		name:      r.info.Name,
		log:       r.info.Log,
		reason:    reason,
		portTaken: strings.Contains(tail, "address already in use"),
	}
}

// startControlPlane starts etcd, kube-apiserver and kube-controller-manager
// and waits until each is ready. On failure it stops whatever it started.
func startControlPlane(ctx context.Context, o options) (st *clusterState, err error) {
	dir := o.stateDir
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{nameEtcd, nameAPIServer, nameController} {
		if _, err := os.Stat(filepath.Join(o.binDir, name)); err != nil {
			return nil, fmt.Errorf("missing binary: %w", err)
		}
	}
	p, err := freePorts(4)
	if err != nil {
		return nil, fmt.Errorf("pick free ports: %w", err)
	}
	st = &clusterState{
		StateDir:   dir,
		BinDir:     o.binDir,
		Kubeconfig: filepath.Join(dir, "admin.kubeconfig"),
		Ports:      ports{EtcdClient: p[0], EtcdPeer: p[1], APIServer: p[2], ControllerManager: p[3]},
		StartedAt:  time.Now().UTC(),
	}
	st.APIServer = fmt.Sprintf("https://127.0.0.1:%d", st.Ports.APIServer)
	st.fillDerived()

	var started []*running
	defer func() {
		if err == nil {
			return
		}
		var infos []procInfo
		for _, r := range started {
			infos = append(infos, r.info)
		}
		logf("start failed; stopping what was started")
		if serr := stopProcesses((&clusterState{Processes: infos}).stopGroups(), 15*time.Second); serr != nil {
			logf("%v", serr)
		}
		for _, r := range started {
			select {
			case <-r.exited:
			case <-time.After(2 * time.Second):
			}
		}
		if cerr := cleanState(dir); cerr != nil {
			logf("%v", cerr)
		}
	}()
	start := func(name string, args []string) (*running, error) {
		logf("starting %s", name)
		r, err := startProcess(name, filepath.Join(o.binDir, name), args, dir, filepath.Join(logDir, name+".log"), false)
		if err != nil {
			return nil, err
		}
		started = append(started, r)
		st.Processes = append(st.Processes, r.info)
		st.fillDerived()
		return r, st.save()
	}
	deadline := time.Now().Add(o.timeout)

	pki, err := writePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	f := pki.files
	ctrlKubeconfig := filepath.Join(dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(ctrlKubeconfig, st.APIServer, "system:kube-controller-manager", pki.ca, pki.ctrl); err != nil {
		return nil, err
	}

	// etcd: plain HTTP on loopback, no fsync (test data is disposable).
	etcdURL := st.EtcdURL
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", st.Ports.EtcdPeer)
	etcd, err := start(nameEtcd, []string{
		"--name=testcluster",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=testcluster=" + peerURL,
		"--initial-cluster-state=new",
		"--quota-backend-bytes=" + strconv.Itoa(8<<30),
		"--unsafe-no-fsync=true",
	})
	if err != nil {
		return nil, err
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	if err := waitFor(ctx, etcd, deadline, "to report healthy", func() error {
		return httpCheck(ctx, plain, etcdURL+"/health", `"health":"true"`)
	}); err != nil {
		return nil, err
	}

	apiserver, err := start(nameAPIServer, []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(st.Ports.APIServer),
		"--etcd-servers=" + etcdURL,
		"--authorization-mode=RBAC",
		"--client-ca-file=" + f.CACert,
		"--tls-cert-file=" + f.APIServerCert,
		"--tls-private-key-file=" + f.APIServerKey,
		"--cert-dir=" + filepath.Join(dir, "pki", "generated"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + f.SAPub,
		"--service-account-signing-key-file=" + f.SAKey,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--allow-privileged=true",
		"--feature-gates=WatchList=true",
		// The API server would publish its advertise address as the
		// endpoint of Service default/kubernetes, and endpoint validation
		// rejects loopback addresses (it would log that every 10s).
		"--endpoint-reconciler-type=none",
		// On SIGTERM, end open watches at once (cleanly) instead of letting
		// the HTTP server wait up to --request-timeout (60s) for them; with
		// the default (0) a stop while clients watch takes a minute.
		"--shutdown-watch-termination-grace-period=5s",
	})
	if err != nil {
		return nil, err
	}
	admin, err := apiClient(pki.ca.certPEM, pki.admin.certPEM, pki.admin.keyPEM)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, apiserver, deadline, "to answer /readyz", func() error {
		return httpCheck(ctx, admin, st.APIServer+"/readyz", "ok")
	}); err != nil {
		return nil, err
	}

	ctrl, err := start(nameController, []string{
		"--kubeconfig=" + ctrlKubeconfig,
		"--authentication-kubeconfig=" + ctrlKubeconfig,
		"--authorization-kubeconfig=" + ctrlKubeconfig,
		// No front-proxy (request-header) CA is configured, so there is
		// nothing to look up in kube-system/extension-apiserver-authentication.
		"--authentication-skip-lookup=true",
		"--controllers=" + controllers,
		"--service-account-private-key-file=" + f.SAKey,
		"--root-ca-file=" + f.CACert,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(st.Ports.ControllerManager),
		// Each controller acts as its own ServiceAccount (as kubeadm sets
		// it up): the system:kube-controller-manager role alone may not
		// write EndpointSlices or delete namespaces' contents.
		"--use-service-account-credentials=true",
	})
	if err != nil {
		return nil, err
	}
	// The controller manager's own serving certificate is self-signed.
	ctrlHealth := insecureClient()
	ctrlURL := fmt.Sprintf("https://127.0.0.1:%d/healthz", st.Ports.ControllerManager)
	if err := waitFor(ctx, ctrl, deadline, "to serve /healthz and create ServiceAccount default/default", func() error {
		if err := httpCheck(ctx, ctrlHealth, ctrlURL, "ok"); err != nil {
			return err
		}
		return httpCheck(ctx, admin, st.APIServer+"/api/v1/namespaces/default/serviceaccounts/default", `"name":"default"`)
	}); err != nil {
		return nil, err
	}

	if err := writeKubeconfig(st.Kubeconfig, st.APIServer, "kubernetes-admin", pki.ca, pki.admin); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	return st, nil
}

// waitFor polls check until it succeeds, the process exits, ctx ends or the
// deadline passes.
func waitFor(ctx context.Context, r *running, deadline time.Time, what string, check func() error) error {
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-r.exited:
			return failure(r, fmt.Sprintf("exited (%v) before it was ready; last check: %v", r.waitErr, last))
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s %s", r.info.Name, what)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return failure(r, fmt.Sprintf("did not get ready in time (waiting %s); last check: %v", what, last))
		}
	}
}

func apiClient(caPEM, certPEM, keyPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("bad CA certificate")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		},
	}, nil
}

// httpCheck GETs url and wants a 200 whose body contains want.
func httpCheck(ctx context.Context, c *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		b := strings.TrimSpace(string(body))
		if len(b) > 300 {
			b = b[:300] + "..."
		}
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return nil
}

// checkReady reports whether every recorded process runs and the API server
// answers /readyz with the admin credentials.
func checkReady(ctx context.Context, st *clusterState, timeout time.Duration) error {
	for _, name := range componentOrder {
		p, ok := st.proc(name)
		if !ok {
			return fmt.Errorf("%s was never started", name)
		}
		if !alive(p) {
			return notRunning(p)
		}
	}
	if _, err := os.Stat(st.Kubeconfig); err != nil {
		return err
	}
	c, err := st.adminClient()
	if err != nil {
		return err
	}
	c.Timeout = timeout
	return httpCheck(ctx, c, st.APIServer+"/readyz", "ok")
}
