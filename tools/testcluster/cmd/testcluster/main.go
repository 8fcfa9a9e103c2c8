// Command testcluster runs a real Kubernetes control plane (etcd,
// kube-apiserver and kube-controller-manager) on free loopback ports, in the
// background, for kubedisco's tests and benchmarks.
//
//	testcluster --state-dir DIR --bin-dir DIR up
//	testcluster --state-dir DIR env
//	testcluster --state-dir DIR status
//	testcluster --state-dir DIR down
//	testcluster --state-dir DIR stop|start|restart COMPONENT
//	testcluster --state-dir DIR compact
//	testcluster --state-dir DIR etcd-url|apiserver-url
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

const usageText = `usage: testcluster [flags] COMMAND [COMPONENT] [flags]

  up                 start etcd, kube-apiserver and kube-controller-manager on free
                     loopback ports (a no-op when this state dir's control plane
                     already answers; starts just the stopped or dead components
                     when etcd data and certificates are intact)
  env                print "export KUBECONFIG=..." for the running control plane
  status             print what runs; exit status 0 only when the control plane is ready
  down               stop everything started from this state dir and delete its data
  stop COMPONENT     stop one component (SIGTERM, --grace, SIGKILL); data and ports are kept
  start COMPONENT    start a stopped component again with the same flags, ports and
                     data, and wait until it is ready
  restart COMPONENT  stop, wait --down-for, start; prints how long each step took
  compact            write a throwaway key to etcd and compact etcd physically to
                     its current revision; prints the revision
  etcd-url           print etcd's client URL (http://127.0.0.1:PORT)
  apiserver-url      print the API server's URL (https://127.0.0.1:PORT)

COMPONENT is etcd, kube-apiserver (or apiserver) or kube-controller-manager
(or controller-manager).

flags:
`

type options struct {
	stateDir string
	binDir   string
	timeout  time.Duration
	grace    time.Duration
	downFor  time.Duration
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("testcluster", flag.ContinueOnError)
	fs.StringVar(&o.stateDir, "state-dir", "", "directory for state.json, certificates, kubeconfigs, etcd data and logs (required)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding etcd, kube-apiserver and kube-controller-manager (required for up)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long up, start and restart wait for readiness")
	fs.DurationVar(&o.grace, "grace", 15*time.Second, "stop, restart: how long to wait after SIGTERM before SIGKILL (0: SIGKILL at once)")
	fs.DurationVar(&o.downFor, "down-for", 0, "restart: how long to keep the component stopped before starting it again")
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
	// Positional arguments (the component) and flags may be mixed.
	var positional []string
	for args := rest[1:]; ; {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	wantArgs := 0
	switch command {
	case "stop", "start", "restart":
		wantArgs = 1
	}
	if len(positional) != wantArgs {
		if wantArgs == 1 {
			fmt.Fprintf(os.Stderr, "testcluster: %s needs one component: %s, %s or %s\n", command, nameEtcd, nameAPIServer, nameController)
		} else {
			fmt.Fprintf(os.Stderr, "testcluster: unexpected arguments: %s\n", strings.Join(positional, " "))
		}
		return 2
	}
	var component string
	if wantArgs == 1 {
		var err error
		if component, err = canonicalComponent(positional[0]); err != nil {
			fmt.Fprintf(os.Stderr, "testcluster: %v\n", err)
			return 2
		}
	}
	downForSet := false
	fs.Visit(func(f *flag.Flag) { downForSet = downForSet || f.Name == "down-for" })
	if downForSet && command != "restart" {
		fmt.Fprintln(os.Stderr, "testcluster: --down-for is for restart only")
		return 2
	}
	if o.grace < 0 || o.downFor < 0 {
		fmt.Fprintln(os.Stderr, "testcluster: --grace and --down-for must not be negative")
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
	case "stop":
		err = cmdStop(o, component)
	case "start":
		err = cmdStart(o, component)
	case "restart":
		err = cmdRestart(o, component)
	case "compact":
		err = cmdCompact(o)
	case "etcd-url":
		err = cmdURL(o, nameEtcd)
	case "apiserver-url":
		err = cmdURL(o, nameAPIServer)
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
		err := checkReady(ctx, st, 5*time.Second)
		if err == nil {
			logf("already running (state dir %s)", o.stateDir)
			printUp(st)
			return nil
		}
		logf("control plane is not ready: %v", err)
		begin := time.Now()
		if err = resumeControlPlane(ctx, o, st); err == nil {
			logf("ready in %.1fs", time.Since(begin).Seconds())
			printUp(st)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while resuming: %w", err)
		}
		logf("cannot resume it (%v); stopping it and starting a fresh control plane (etcd data is discarded)", err)
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
		switch {
		case alive(p):
		case p.Stopped:
			s = "STOPPED"
		default:
			s = "NOT RUNNING"
		}
		extra := ""
		if p.Restarts > 0 {
			extra = fmt.Sprintf(" (restarts %d)", p.Restarts)
		}
		if !alive(p) && p.Stopped {
			extra += fmt.Sprintf(" (testcluster stop at %s; scripts/testcluster start %s)", p.StoppedAt.Local().Format(time.TimeOnly), p.Name)
		} else if !alive(p) {
			extra += fmt.Sprintf(" (died; see its log; scripts/testcluster start %s)", p.Name)
		}
		fmt.Printf("%-24s pid %-8d %-12s log %s%s\n", p.Name, p.PID, s, p.Log, extra)
	}
	fmt.Printf("ports       etcd client %d, etcd peer %d, kube-apiserver %d, kube-controller-manager %d\n",
		st.Ports.EtcdClient, st.Ports.EtcdPeer, st.Ports.APIServer, st.Ports.ControllerManager)
	fmt.Printf("api server  %s\n", st.APIServer)
	fmt.Printf("etcd        %s\n", st.EtcdURL)
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
