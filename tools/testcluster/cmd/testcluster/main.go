// Command testcluster runs a real Kubernetes control plane (etcd,
// kube-apiserver and kube-controller-manager) on free loopback ports, in the
// background, for kubedisco's tests and benchmarks.
//
//	testcluster --state-dir DIR --bin-dir DIR up
//	testcluster --state-dir DIR env
//	testcluster --state-dir DIR status
//	testcluster --state-dir DIR down
//
// Flags may come before or after the command. See README.md in
// tools/testcluster for the layout of DIR and the flags each component gets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const usageText = `usage: testcluster [flags] up|env|status|down

  up      start etcd, kube-apiserver and kube-controller-manager on free loopback
          ports (a no-op when this state dir's control plane already answers)
  env     print "export KUBECONFIG=..." for the running control plane
  status  print what runs; exit status 0 only when the control plane is ready
  down    stop everything started from this state dir and delete its data

flags:
`

type options struct {
	stateDir string
	binDir   string
	timeout  time.Duration
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("testcluster", flag.ContinueOnError)
	fs.StringVar(&o.stateDir, "state-dir", "", "directory for state.json, certificates, kubeconfigs, etcd data and logs (required)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding etcd, kube-apiserver and kube-controller-manager (required for up)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long up waits for the control plane to become ready")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	command := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "testcluster: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if o.stateDir == "" {
		fmt.Fprintln(os.Stderr, "testcluster: --state-dir is required")
		return 2
	}
	var err error
	if o.stateDir, err = filepath.Abs(o.stateDir); err != nil {
		fmt.Fprintf(os.Stderr, "testcluster: %v\n", err)
		return 1
	}
	if o.binDir != "" {
		if o.binDir, err = filepath.Abs(o.binDir); err != nil {
			fmt.Fprintf(os.Stderr, "testcluster: %v\n", err)
			return 1
		}
	}

	switch command {
	case "up":
		if o.binDir == "" {
			fmt.Fprintln(os.Stderr, "testcluster: --bin-dir is required for up")
			return 2
		}
		err = cmdUp(o)
	case "env":
		err = cmdEnv(o)
	case "status":
		err = cmdStatus(o)
	case "down":
		err = cmdDown(o)
	case "help":
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "testcluster: unknown command %q\n", command)
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testcluster %s: %v\n", command, err)
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testcluster: "+format+"\n", args...)
}

// lockStateDir takes an exclusive lock on <state>/.lock so that concurrent
// up/down calls on one state dir run one after the other.
func lockStateDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func cmdUp(o options) error {
	release, err := lockStateDir(o.stateDir)
	if err != nil {
		return err
	}
	defer release()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	st, err := loadState(o.stateDir)
	if err != nil {
		logf("ignoring unreadable state: %v", err)
		st = nil
	}
	if st != nil {
		if err := checkReady(ctx, st, 5*time.Second); err == nil {
			logf("already running (state dir %s)", o.stateDir)
			printUp(st)
			return nil
		} else {
			logf("previous control plane is not healthy (%v); restarting it", err)
		}
		if err := stopProcesses(st.stopGroups(), 15*time.Second); err != nil {
			return err
		}
	}
	if err := cleanState(o.stateDir); err != nil {
		return err
	}

	begin := time.Now()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		st, err = startControlPlane(ctx, o)
		if err == nil {
			break
		}
		if attempt < attempts && errors.Is(err, errPortTaken) && ctx.Err() == nil {
			var sf *startFailure
			if errors.As(err, &sf) {
				logf("%s could not bind a port (%s); retrying with other ports", sf.name, sf.log)
			}
			if cerr := cleanState(o.stateDir); cerr != nil {
				return cerr
			}
			continue
		}
		return err
	}
	logf("ready in %.1fs", time.Since(begin).Seconds())
	printUp(st)
	return nil
}

func printUp(st *clusterState) {
	fmt.Printf("control plane up: kubeconfig %s\n", st.Kubeconfig)
	fmt.Printf("  kube-apiserver %s, etcd http://127.0.0.1:%d, logs %s\n",
		st.APIServer, st.Ports.EtcdClient, filepath.Join(st.StateDir, "logs"))
	fmt.Printf("export KUBECONFIG=%s\n", shellQuote(st.Kubeconfig))
}

func cmdEnv(o options) error {
	st, err := loadState(o.stateDir)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("not up (no state in %s); run: scripts/testcluster up", o.stateDir)
	}
	if err := checkReady(context.Background(), st, 5*time.Second); err != nil {
		return fmt.Errorf("not up: %v; run: scripts/testcluster up", err)
	}
	fmt.Printf("export KUBECONFIG=%s\n", shellQuote(st.Kubeconfig))
	return nil
}

func cmdStatus(o options) error {
	st, err := loadState(o.stateDir)
	if err != nil {
		return err
	}
	if st == nil {
		fmt.Printf("not running (no state in %s)\n", o.stateDir)
		return errors.New("not running")
	}
	fmt.Printf("state dir   %s (started %s)\n", st.StateDir, st.StartedAt.Local().Format(time.RFC3339))
	for _, p := range st.Processes {
		s := "running"
		if !alive(p) {
			s = "NOT RUNNING"
		}
		fmt.Printf("%-24s pid %-8d %-12s log %s\n", p.Name, p.PID, s, p.Log)
	}
	fmt.Printf("ports       etcd client %d, etcd peer %d, kube-apiserver %d, kube-controller-manager %d\n",
		st.Ports.EtcdClient, st.Ports.EtcdPeer, st.Ports.APIServer, st.Ports.ControllerManager)
	fmt.Printf("api server  %s\n", st.APIServer)
	fmt.Printf("kubeconfig  %s\n", st.Kubeconfig)
	if err := checkReady(context.Background(), st, 5*time.Second); err != nil {
		fmt.Printf("ready       no: %v\n", err)
		return errors.New("not ready")
	}
	fmt.Println("ready       yes")
	return nil
}

func cmdDown(o options) error {
	if _, err := os.Stat(o.stateDir); errors.Is(err, os.ErrNotExist) {
		logf("nothing to stop (no %s)", o.stateDir)
		return nil
	}
	release, err := lockStateDir(o.stateDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := loadState(o.stateDir)
	if err != nil {
		return err
	}
	if st == nil {
		logf("nothing to stop (no state in %s)", o.stateDir)
		return cleanState(o.stateDir)
	}
	if err := stopProcesses(st.stopGroups(), 15*time.Second); err != nil {
		return err
	}
	if err := cleanState(o.stateDir); err != nil {
		return err
	}
	logf("stopped; logs kept in %s", filepath.Join(o.stateDir, "logs"))
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
