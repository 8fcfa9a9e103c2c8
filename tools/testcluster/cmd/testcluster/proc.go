package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procInfo is one started component, as recorded in state.json. PID and
// Start are those of the latest start; a component stopped with
// `testcluster stop` keeps them and has Stopped set.
type procInfo struct {
	Name   string   `json:"name"`
	PID    int      `json:"pid"`
	Start  uint64   `json:"startTicks,omitempty"` // /proc/<pid>/stat field 22, guards against PID reuse
	Binary string   `json:"binary"`
	Args   []string `json:"args"`
	Log    string   `json:"log"`
	// URL is where the component serves: etcd's client URL, the API
	// server's URL, the controller manager's (self-signed) HTTPS endpoint.
	URL       string    `json:"url,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// Stopped is set by `testcluster stop` (and cleared by start); a
	// component that is not running without it has died.
	Stopped   bool      `json:"stopped,omitempty"`
	StoppedAt time.Time `json:"stoppedAt,omitzero"`
	// Restarts counts starts after the first one.
	Restarts int `json:"restarts,omitempty"`
}

// running is a component started by this invocation; exited is closed when
// the process has been reaped.
type running struct {
	info    procInfo
	exited  chan struct{}
	waitErr error
}

// startProcess starts bin with args in its own session (so it survives this
// command and receives no terminal signals), with stdin from /dev/null and
// stdout+stderr written to logPath (truncated first unless appendLog).
func startProcess(name, bin string, args []string, dir, logPath string, appendLog bool) (*running, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s binary: %w", name, err)
	}
	mode := os.O_TRUNC
	if appendLog {
		mode = os.O_APPEND
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "# %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r := &running{
		info: procInfo{
			Name:      name,
			PID:       cmd.Process.Pid,
			Binary:    bin,
			Args:      args,
			Log:       logPath,
			StartedAt: time.Now().UTC(),
		},
		exited: make(chan struct{}),
	}
	r.info.Start, _ = procStartTicks(r.info.PID)
	go func() {
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()
	return r, nil
}

// childEnv is the environment of the components: ours, minus variables that
// would point them at something other than the files we pass explicitly.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "KUBECONFIG" || strings.HasPrefix(k, "ETCD_") || strings.HasPrefix(k, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// procStat returns the state letter and start time (in clock ticks since
// boot) of pid, read from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0][0], start, err
}

func procStartTicks(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

func haveProcFS() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// alive reports whether the recorded process still runs: it exists, is not
// a zombie, and (where /proc exists) is the same process, not a reused PID.
func alive(p procInfo) bool {
	if p.PID <= 0 {
		return false
	}
	if !haveProcFS() {
		return syscall.Kill(p.PID, 0) == nil
	}
	state, start, err := procStat(p.PID)
	if err != nil {
		return false
	}
	if p.Start != 0 && start != p.Start {
		return false
	}
	if state == 'Z' || state == 'X' {
		// The main thread of a multithreaded process turns zombie first;
		// until the other threads have exited the process still holds its
		// files and sockets (a new instance could not bind its ports).
		return threadsLeft(p.PID)
	}
	return true
}

// threadsLeft reports whether pid has threads other than its main thread.
func threadsLeft(pid int) bool {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		if t.Name() != strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// signalGroup signals the process group led by p (each component is a
// session leader, so its group ID is its PID), or just p if it leads none.
func signalGroup(p procInfo, sig syscall.Signal) {
	if !alive(p) {
		return
	}
	if pgid, err := syscall.Getpgid(p.PID); err == nil && pgid == p.PID {
		if err := syscall.Kill(-p.PID, sig); err == nil || !errors.Is(err, syscall.ESRCH) {
			return
		}
	}
	_ = syscall.Kill(p.PID, sig)
}

// stopProcesses stops procs in order of the slice's groups: every group is
// sent SIGTERM together and waited for before the next group is signalled;
// whatever is left when the grace period ends gets SIGKILL. It returns an
// error naming any process that still runs afterwards.
func stopProcesses(groups [][]procInfo, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for _, group := range groups {
		var live []procInfo
		for _, p := range group {
			if alive(p) {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			continue
		}
		for _, p := range live {
			logf("stopping %s (pid %d)", p.Name, p.PID)
			signalGroup(p, syscall.SIGTERM)
		}
		// Later groups get at least a few seconds even if earlier ones used up the grace period.
		d := time.Until(deadline)
		if d < 3*time.Second {
			d = 3 * time.Second
		}
		waitGone(live, d)
	}
	var all []procInfo
	for _, g := range groups {
		all = append(all, g...)
	}
	var left []procInfo
	for _, p := range all {
		if alive(p) {
			logf("%s (pid %d) did not stop after SIGTERM, sending SIGKILL", p.Name, p.PID)
			signalGroup(p, syscall.SIGKILL)
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		waitGone(left, 5*time.Second)
	}
	var still []string
	for _, p := range all {
		if alive(p) {
			still = append(still, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
		}
	}
	if len(still) > 0 {
		return fmt.Errorf("still running after SIGKILL: %s", strings.Join(still, ", "))
	}
	return nil
}

// stopProcess stops one process (its process group): SIGTERM, up to grace
// for it to exit, then SIGKILL. With grace 0 it sends SIGKILL at once.
func stopProcess(p procInfo, grace time.Duration) error {
	if !alive(p) {
		return nil
	}
	if grace > 0 {
		signalGroup(p, syscall.SIGTERM)
		waitGone([]procInfo{p}, grace)
		if alive(p) {
			logf("%s (pid %d) did not stop within %s of SIGTERM, sending SIGKILL", p.Name, p.PID, grace)
		}
	}
	if alive(p) {
		signalGroup(p, syscall.SIGKILL)
		waitGone([]procInfo{p}, 5*time.Second)
	}
	if alive(p) {
		return fmt.Errorf("%s (pid %d) still runs after SIGKILL", p.Name, p.PID)
	}
	return nil
}

func waitGone(procs []procInfo, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		any := false
		for _, p := range procs {
			if alive(p) {
				any = true
				break
			}
		}
		if !any {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tailFile returns up to the last n lines of path.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const maxRead = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
