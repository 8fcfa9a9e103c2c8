package main

// stop, start and restart of one component, resuming a partly stopped
// control plane, etcd compaction, and the URL commands.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// componentOrder is the start order; each needs the one before it.
var componentOrder = []string{nameEtcd, nameAPIServer, nameController}

// canonicalComponent maps a component name (or a short alias) to its name.
func canonicalComponent(s string) (string, error) {
	switch s {
	case nameEtcd:
		return nameEtcd, nil
	case nameAPIServer, "apiserver":
		return nameAPIServer, nil
	case nameController, "controller-manager":
		return nameController, nil
	}
	return "", fmt.Errorf("unknown component %q (want %s, %s or %s)", s, nameEtcd, nameAPIServer, nameController)
}

// dependency returns the component that name needs running, or "".
func dependency(name string) string {
	for i, n := range componentOrder {
		if n == name && i > 0 {
			return componentOrder[i-1]
		}
	}
	return ""
}

// loadUpState loads the state, failing when there is none.
func loadUpState(o options) (*clusterState, error) {
	st, err := loadState(o.stateDir)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("not up (no state in %s); run: scripts/testcluster up", o.stateDir)
	}
	return st, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// stopComponent stops name (SIGTERM, grace, SIGKILL) and records it as
// stopped. It returns how long stopping took.
func stopComponent(st *clusterState, name string, grace time.Duration) (time.Duration, error) {
	p := st.procRef(name)
	if p == nil {
		return 0, fmt.Errorf("%s is not recorded in %s", name, statePath(st.StateDir))
	}
	if !alive(*p) {
		if p.Stopped {
			return 0, nil
		}
		p.Stopped, p.StoppedAt = true, time.Now().UTC()
		return 0, st.save()
	}
	begin := time.Now()
	logf("stopping %s (pid %d)", name, p.PID)
	if err := stopProcess(*p, grace); err != nil {
		return time.Since(begin), err
	}
	took := time.Since(begin)
	p.Stopped, p.StoppedAt = true, time.Now().UTC()
	return took, st.save()
}

// startComponent starts name again with its recorded binary, flags and log
// (appended to), records the new PID and waits until it is ready. fallbackBin
// is a directory to take the binary from if the recorded one is gone ("" for
// none). It returns the time from start to ready; started is false when the
// component already ran.
func startComponent(ctx context.Context, st *clusterState, name, fallbackBin string, deadline time.Time) (readyIn time.Duration, started bool, err error) {
	p := st.procRef(name)
	if p == nil {
		return 0, false, fmt.Errorf("%s is not recorded in %s", name, statePath(st.StateDir))
	}
	if alive(*p) {
		return 0, false, nil
	}
	if dep := dependency(name); dep != "" {
		if d, ok := st.proc(dep); !ok || !alive(d) {
			return 0, false, fmt.Errorf("%s needs %s, which is not running; start it first (scripts/testcluster start %s)", name, dep, dep)
		}
	}
	bin := p.Binary
	if _, err := os.Stat(bin); err != nil && fallbackBin != "" {
		alt := filepath.Join(fallbackBin, name)
		if _, aerr := os.Stat(alt); aerr == nil {
			logf("recorded %s binary is gone (%v); using %s", name, err, alt)
			bin = alt
			st.BinDir = fallbackBin
		}
	}
	if err := os.MkdirAll(filepath.Dir(p.Log), 0o755); err != nil {
		return 0, false, err
	}
	if err := waitPortsFree(ctx, st.portsOf(name), 10*time.Second); err != nil {
		return 0, false, fmt.Errorf("cannot start %s: %w", name, err)
	}
	logf("starting %s", name)
	r, err := startProcess(name, bin, p.Args, st.StateDir, p.Log, true)
	if err != nil {
		return 0, false, err
	}
	begin := time.Now()
	first := p.PID == 0
	p.PID, p.Start, p.Binary, p.StartedAt = r.info.PID, r.info.Start, bin, r.info.StartedAt
	p.Stopped, p.StoppedAt = false, time.Time{}
	if !first {
		p.Restarts++
	}
	if err := st.save(); err != nil {
		return 0, true, err
	}
	check, what, err := st.readyCheck(ctx, name)
	if err != nil {
		return 0, true, err
	}
	if err := waitFor(ctx, r, deadline, what, check); err != nil {
		return time.Since(begin), true, err
	}
	return time.Since(begin), true, nil
}

// portsOf returns the loopback ports that component name listens on.
func (st *clusterState) portsOf(name string) []int {
	switch name {
	case nameEtcd:
		return []int{st.Ports.EtcdClient, st.Ports.EtcdPeer}
	case nameAPIServer:
		return []int{st.Ports.APIServer}
	case nameController:
		return []int{st.Ports.ControllerManager}
	}
	return nil
}

// waitPortsFree waits until every port can be bound on 127.0.0.1 (with
// SO_REUSEADDR, as the components bind them), so that a component started
// right after its predecessor was killed does not fail with "address already
// in use".
func waitPortsFree(ctx context.Context, ports []int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, port := range ports {
		for {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				l.Close()
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("port %d is still in use (did another process take it?): %w", port, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func cmdStop(o options, name string) error {
	release, err := lockStateDir(o.stateDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := loadUpState(o)
	if err != nil {
		return err
	}
	p, _ := st.proc(name)
	wasAlive := alive(p)
	took, err := stopComponent(st, name, o.grace)
	if err != nil {
		return err
	}
	switch {
	case wasAlive:
		fmt.Printf("%s stopped (pid %d) in %s\n", name, p.PID, seconds(took))
	case p.Stopped:
		fmt.Printf("%s already stopped\n", name)
	default:
		fmt.Printf("%s was not running (pid %d had exited); marked stopped\n", name, p.PID)
	}
	return nil
}

func cmdStart(o options, name string) error {
	ctx, cancel := signalContext()
	defer cancel()
	release, err := lockStateDir(o.stateDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := loadUpState(o)
	if err != nil {
		return err
	}
	readyIn, started, err := startComponent(ctx, st, name, o.binDir, time.Now().Add(o.timeout))
	if err != nil {
		return err
	}
	p, _ := st.proc(name)
	if !started {
		fmt.Printf("%s already running (pid %d)\n", name, p.PID)
		return nil
	}
	fmt.Printf("%s started (pid %d), ready in %s\n", name, p.PID, seconds(readyIn))
	afterStart(ctx, st, name, o.binDir, time.Now().Add(o.timeout))
	return nil
}

// afterStart runs after name was started and is ready: it starts again the
// components that need name and have died meanwhile (not those stopped with
// `testcluster stop`) - the controller manager exits when it cannot fetch
// its controllers' tokens while the API server is down - and, after etcd,
// waits for a running API server to answer /readyz again. It only logs.
func afterStart(ctx context.Context, st *clusterState, name, fallbackBin string, deadline time.Time) {
	after := false
	for _, n := range componentOrder {
		if n == name {
			after = true
			continue
		}
		if !after {
			continue
		}
		p, ok := st.proc(n)
		if !ok || p.Stopped || alive(p) {
			continue
		}
		logf("%s (pid %d) had exited (see %s); starting it again", n, p.PID, p.Log)
		readyIn, _, err := startComponent(ctx, st, n, fallbackBin, deadline)
		if err != nil {
			logf("%v", err)
			return
		}
		logf("%s ready in %s", n, seconds(readyIn))
	}
	if name != nameEtcd {
		return
	}
	p, ok := st.proc(nameAPIServer)
	if !ok || !alive(p) {
		return
	}
	check, _, err := st.readyCheck(ctx, nameAPIServer)
	if err != nil {
		logf("%v", err)
		return
	}
	begin := time.Now()
	for {
		err := check()
		if err == nil {
			logf("%s answers /readyz again (%s after etcd was ready)", nameAPIServer, seconds(time.Since(begin)))
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logf("%s does not answer /readyz yet: %v", nameAPIServer, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cmdRestart(o options, name string) error {
	ctx, cancel := signalContext()
	defer cancel()
	begin := time.Now()

	// The lock is held while stopping and while starting, not in between, so
	// that other commands (compact, stop/start of other components) can run
	// during --down-for.
	var oldPID int
	var stopTook time.Duration
	err := func() error {
		release, err := lockStateDir(o.stateDir)
		if err != nil {
			return err
		}
		defer release()
		st, err := loadUpState(o)
		if err != nil {
			return err
		}
		p, _ := st.proc(name)
		oldPID = p.PID
		if !alive(p) {
			oldPID = 0
		}
		stopTook, err = stopComponent(st, name, o.grace)
		return err
	}()
	if err != nil {
		return err
	}
	if o.downFor > 0 {
		logf("keeping %s stopped for %s", name, o.downFor)
		select {
		case <-time.After(o.downFor):
		case <-ctx.Done():
			return fmt.Errorf("interrupted; %s is left stopped (scripts/testcluster start %s)", name, name)
		}
	}

	release, err := lockStateDir(o.stateDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := loadUpState(o)
	if err != nil {
		return err
	}
	startAt := time.Now()
	down := startAt.Sub(begin)
	readyIn, started, err := startComponent(ctx, st, name, o.binDir, startAt.Add(o.timeout))
	if err != nil {
		return err
	}
	p, _ := st.proc(name)
	if !started {
		// Someone else started it during --down-for.
		fmt.Printf("%s was started by someone else meanwhile (pid %d)\n", name, p.PID)
		return nil
	}
	old := "not running"
	if oldPID != 0 {
		old = "pid " + strconv.Itoa(oldPID)
	}
	fmt.Printf("%s restarted: %s -> pid %d; stop %s, down %s, ready %s after start, %s in all\n",
		name, old, p.PID, seconds(stopTook), seconds(down), seconds(readyIn), seconds(time.Since(begin)))
	afterStart(ctx, st, name, o.binDir, time.Now().Add(o.timeout))
	return nil
}

// resumeControlPlane starts the recorded components that do not run, when
// the state dir still has everything they need (certificates, kubeconfigs,
// etcd data), and waits until the control plane is ready. An error means
// the caller should start afresh.
func resumeControlPlane(ctx context.Context, o options, st *clusterState) error {
	if st.StateDir != o.stateDir {
		return fmt.Errorf("state.json names another state dir (%s)", st.StateDir)
	}
	var missing []string
	for _, name := range componentOrder {
		p, ok := st.proc(name)
		if !ok {
			return fmt.Errorf("%s was never started", name)
		}
		if !alive(p) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return errors.New("every component runs, but the control plane is not ready")
	}
	files := newPKIFiles(filepath.Join(st.StateDir, "pki"))
	for _, path := range []string{
		files.CACert, files.APIServerCert, files.APIServerKey, files.AdminCert, files.AdminKey, files.SAKey, files.SAPub,
		st.Kubeconfig, filepath.Join(st.StateDir, "controller-manager.kubeconfig"),
		filepath.Join(st.StateDir, "etcd", "member"),
	} {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("cannot resume: %w", err)
		}
	}
	logf("resuming: starting %s (etcd data and certificates kept)", strings.Join(missing, ", "))
	deadline := time.Now().Add(o.timeout)
	for _, name := range missing {
		readyIn, _, err := startComponent(ctx, st, name, o.binDir, deadline)
		if err != nil {
			return err
		}
		logf("%s ready in %s", name, seconds(readyIn))
	}
	var last error
	for {
		if last = checkReady(ctx, st, 5*time.Second); last == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready after resuming: %w", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// etcdPost POSTs a JSON request to etcd's v3 gRPC gateway and decodes the
// answer into out.
func etcdPost(ctx context.Context, c *http.Client, base, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("POST %s: %w: %s", path, err, b)
	}
	return nil
}

// etcdHeader is the response header etcd's gateway sends; int64 fields come
// as JSON strings.
type etcdHeader struct {
	Header struct {
		Revision json.Number `json:"revision"`
	} `json:"header"`
}

func (h etcdHeader) revision() (int64, error) {
	if h.Header.Revision == "" {
		return 0, errors.New("no header.revision in etcd's answer")
	}
	return h.Header.Revision.Int64()
}

// compactKey is the throwaway key compact writes (and deletes again); it is
// outside the API server's /registry prefix.
const compactKey = "/testcluster/compact"

// cmdCompact advances etcd's revision (puts and deletes a throwaway key) and
// compacts etcd physically to its current revision, through its v3 JSON
// gateway. It does not need the API server.
func cmdCompact(o options) error {
	ctx, cancel := signalContext()
	defer cancel()
	st, err := loadUpState(o)
	if err != nil {
		return err
	}
	p, ok := st.proc(nameEtcd)
	if !ok {
		return fmt.Errorf("%s is not recorded in %s", nameEtcd, statePath(st.StateDir))
	}
	if !alive(p) {
		return fmt.Errorf("%v; start it first (scripts/testcluster start etcd)", notRunning(p))
	}
	begin := time.Now()
	c := &http.Client{Timeout: 60 * time.Second}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	var h etcdHeader
	if err := etcdPost(ctx, c, st.EtcdURL, "/v3/kv/put", map[string]any{
		"key": b64(compactKey), "value": b64(time.Now().UTC().Format(time.RFC3339Nano)),
	}, &h); err != nil {
		return err
	}
	if err := etcdPost(ctx, c, st.EtcdURL, "/v3/kv/deleterange", map[string]any{"key": b64(compactKey)}, &h); err != nil {
		return err
	}
	// The current revision, as any range answer's header reports it.
	if err := etcdPost(ctx, c, st.EtcdURL, "/v3/kv/range", map[string]any{
		"key": b64(compactKey), "count_only": true,
	}, &h); err != nil {
		return err
	}
	rev, err := h.revision()
	if err != nil {
		return err
	}
	if err := etcdPost(ctx, c, st.EtcdURL, "/v3/kv/compaction", map[string]any{
		"revision": strconv.FormatInt(rev, 10), "physical": true,
	}, &h); err != nil {
		return err
	}
	logf("compacted in %s", seconds(time.Since(begin)))
	fmt.Printf("compacted etcd %s to revision %d\n", st.EtcdURL, rev)
	return nil
}

// cmdURL prints the etcd or API server URL recorded in the state, whether or
// not that component runs now.
func cmdURL(o options, which string) error {
	st, err := loadUpState(o)
	if err != nil {
		return err
	}
	switch which {
	case nameEtcd:
		fmt.Println(st.EtcdURL)
	default:
		fmt.Println(st.APIServer)
	}
	return nil
}
