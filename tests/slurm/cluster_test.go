package slurm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The cluster: one node, "localhost", running munged, slurmctld and slurmd as
// children of the test, each in its own process group, configured by files
// in a directory of its own. Every process of the cluster (the daemons,
// slurmstepd, the job scripts and what they run) carries the environment
// entry markerVar=<that directory>: sbatch exports the submitter's
// environment to the job, and slurmd passes its own to slurmstepd. Teardown
// finds what is left by that entry, so it ends exactly the processes this
// test started, including those that Slurm moved out of its process groups
// (slurmstepd starts a session of its own).

// markerVar names the environment entry that marks this cluster's processes.
const markerVar = "ESM2GO_SLURM_TEST_CLUSTER"

// requireEnv, when "1", makes a cluster that cannot start a failure instead
// of a skip (.ci/run sets it after installing slurm-wlm and munge).
const requireEnv = "ESM2GO_REQUIRE_SLURM"

// slurmBins are the programs the test runs, by name.
var slurmBins = []string{"munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel"}

// requireSlurm returns the path of every program in slurmBins, or skips the
// test (fails it when ESM2GO_REQUIRE_SLURM=1) saying what is missing.
func requireSlurm(t *testing.T) map[string]string {
	t.Helper()
	notReady := notReadyFunc(t)
	if runtime.GOOS != "linux" {
		notReady("the Slurm test runs on Linux only")
	}
	paths := map[string]string{}
	var missing []string
	for _, name := range slurmBins {
		p, err := exec.LookPath(name)
		if err != nil {
			// Debian puts the daemons in /usr/sbin, which a non-login PATH may lack.
			for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
				if fi, serr := os.Stat(filepath.Join(dir, name)); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
					p, err = filepath.Join(dir, name), nil
					break
				}
			}
		}
		if err != nil {
			missing = append(missing, name)
			continue
		}
		paths[name] = p
	}
	if len(missing) > 0 {
		notReady("slurm-wlm not installed (missing %s): apt-get install slurm-wlm munge", strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		notReady("the Slurm test starts munged, slurmctld and slurmd, which need root (running as uid %d)", os.Geteuid())
	}
	return paths
}

// notReadyFunc returns the way a missing prerequisite ends the test: a skip,
// or a failure when ESM2GO_REQUIRE_SLURM=1.
func notReadyFunc(t *testing.T) func(format string, args ...any) {
	return func(format string, args ...any) {
		t.Helper()
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf(format+" ("+requireEnv+"=1: Slurm must run here)", args...)
		}
		t.Skipf(format, args...)
	}
}

type cluster struct {
	dir  string            // configuration, keys, state, logs
	conf string            // slurm.conf
	bins map[string]string // program paths (requireSlurm)
	env  []string          // environment of every process of the cluster
	cpus int               // the node's CPUs

	daemons  []*daemon // in start order
	tornDown bool
}

type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited and been reaped
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// startCluster starts a cluster whose node is idle, or ends the test through
// notReady with the daemons' logs. Teardown is registered with t.Cleanup
// before anything starts. A failed start is retried once from scratch: the
// ports are chosen free but only bound later, so another program may take
// one in between.
func startCluster(t *testing.T, ctx context.Context, bins map[string]string) *cluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := newCluster(bins)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.teardown(t) })
		err = c.start(ctx)
		if err == nil {
			return c
		}
		if attempt == 2 || ctx.Err() != nil {
			notReadyFunc(t)("Slurm did not start: %v\n%s", err, c.logTails())
		}
		t.Logf("Slurm did not start, trying again with new ports: %v\n%s", err, c.logTails())
		c.teardown(t)
	}
}

func newCluster(bins map[string]string) (*cluster, error) {
	// Not t.TempDir: munged refuses a socket whose directory or parents
	// others cannot traverse, and t.TempDir's parent is 0700.
	dir, err := os.MkdirTemp("", "esm2go-slurm-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &cluster{dir: dir, conf: filepath.Join(dir, "slurm.conf"), bins: bins, cpus: runtime.NumCPU()}
	c.env = append(os.Environ(), "SLURM_CONF="+c.conf, markerVar+"="+dir)
	return c, nil
}

// freePorts returns n TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// memoryMB is MemTotal from /proc/meminfo in MiB.
func memoryMB() (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: MemTotal %q: %w", f[1], err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("/proc/meminfo: no MemTotal line")
}

// writeConfig writes the munge key, slurm.conf and gres.conf.
func (c *cluster) writeConfig() error {
	sock := filepath.Join(c.dir, "munge", "munge.socket")
	if len(sock) > 100 { // sun_path holds 108 bytes
		return fmt.Errorf("munge socket path %s is too long for a Unix socket: set TMPDIR to a shorter directory", sock)
	}
	for _, d := range []string{"munge", "state", "spool"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o755); err != nil {
			return err
		}
	}
	key := make([]byte, 1024)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	// munged wants the key owned by its user and unreadable by others.
	if err := os.WriteFile(filepath.Join(c.dir, "munge", "munge.key"), key, 0o400); err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	mem, err := memoryMB()
	if err != nil {
		return err
	}
	// Half the memory: a node that registers with less than its configured
	// RealMemory is drained, and jobs here need a few tens of MiB.
	mem = max(mem/2, 256)
	p := func(name string) string { return filepath.Join(c.dir, name) }
	conf := []string{
		"ClusterName=esm2gotest",
		"SlurmctldHost=localhost",
		"SlurmctldPort=" + strconv.Itoa(ports[0]),
		"SlurmdPort=" + strconv.Itoa(ports[1]),
		"SlurmUser=root",
		"SlurmdUser=root",
		"AuthType=auth/munge",
		"CredType=cred/munge",
		"AuthInfo=socket=" + sock,
		"StateSaveLocation=" + p("state"),
		"SlurmdSpoolDir=" + p("spool"),
		"SlurmctldPidFile=" + p("slurmctld.pid"),
		"SlurmdPidFile=" + p("slurmd.pid"),
		"SlurmctldLogFile=" + p("slurmctld.log"),
		"SlurmdLogFile=" + p("slurmd.log"),
		"SlurmctldDebug=info",
		"SlurmdDebug=info",
		// No cgroups (none in a container without systemd): processes are
		// tracked by parentage, tasks are not bound.
		"ProctrackType=proctrack/linuxproc",
		"TaskPlugin=task/none",
		"SelectType=select/cons_tres",
		"SelectTypeParameters=CR_CPU",
		// By default the main scheduler runs at most every 2 s and may hold
		// batch jobs back 3 s: a task waiting for a CPU would start seconds
		// after another ends.
		"SchedulerParameters=sched_min_interval=100000,batch_sched_delay=0",
		// No accounting database: the test reads job states with scontrol,
		// and MinJobAge keeps finished jobs there for the whole test.
		"JobAcctGatherType=jobacct_gather/none",
		"AccountingStorageType=accounting_storage/none",
		"JobCompType=jobcomp/none",
		"MinJobAge=600",
		"MpiDefault=none",
		"MailProg=/bin/true",
		"ReturnToService=2",
		// The node's sockets/cores layout may differ from what slurmd
		// detects (a VM's vCPUs); trust the configured CPUs.
		"SlurmdParameters=config_overrides",
		// Two stand-in GPUs, so that deploy/slurm/embed.sbatch's
		// --gres=gpu:1 is satisfied as written (esm2go runs on the CPU).
		"GresTypes=gpu",
		fmt.Sprintf("NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=%d RealMemory=%d Gres=gpu:2 State=UNKNOWN", c.cpus, mem),
		"PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
	}
	if err := os.WriteFile(c.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	// slurmd keeps a GPU only with a device file; any two will do, as
	// nothing constrains devices (task/none).
	gres := "Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n"
	return os.WriteFile(p("gres.conf"), []byte(gres), 0o644)
}

// startDaemon starts bin with args in its own process group, its output in
// <dir>/<name>.out. Pdeathsig ends it if the test binary dies before
// teardown.
func (c *cluster) startDaemon(name string, args ...string) error {
	out := filepath.Join(c.dir, name+".out")
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(c.bins[name], args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	c.daemons = append(c.daemons, d)
	return nil
}

// start writes the configuration, starts the daemons and waits for the node
// to be idle (at most a minute).
func (c *cluster) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.writeConfig(); err != nil {
		return err
	}
	md := filepath.Join(c.dir, "munge")
	if err := c.startDaemon("munged", "--foreground", "--force",
		"--socket="+filepath.Join(md, "munge.socket"), "--key-file="+filepath.Join(md, "munge.key"),
		"--pid-file="+filepath.Join(md, "munged.pid"), "--log-file="+filepath.Join(md, "munged.log"),
		"--seed-file="+filepath.Join(md, "munged.seed")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "munged's socket", func() (bool, string) {
		_, err := os.Stat(filepath.Join(md, "munge.socket"))
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		return err
	}
	// -c: a fresh state (the state directory is new anyway).
	if err := c.startDaemon("slurmctld", "-D", "-c", "-f", c.conf); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "slurmctld to answer", func() (bool, string) {
		out, err := c.command(ctx, "scontrol", "ping")
		return err == nil && strings.Contains(out, "UP"), out
	}); err != nil {
		return err
	}
	if err := c.startDaemon("slurmd", "-D", "-N", "localhost", "-f", c.conf); err != nil {
		return err
	}
	return c.waitFor(ctx, "the node to be idle", func() (bool, string) {
		out, err := c.command(ctx, "sinfo", "-h", "-N", "-n", "localhost", "-o", "%T %E")
		return err == nil && strings.HasPrefix(strings.TrimSpace(out), "idle"), out
	})
}

// waitFor polls cond until it holds, a daemon exits or ctx ends; the error
// quotes cond's last note.
func (c *cluster) waitFor(ctx context.Context, what string, cond func() (bool, string)) error {
	for {
		ok, note := cond()
		if ok {
			return nil
		}
		for _, d := range c.daemons {
			if d.exited() {
				return fmt.Errorf("waiting for %s: %s exited (%v)", what, d.name, d.cmd.ProcessState)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %s)", what, ctx.Err(), strings.TrimSpace(note))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// command runs a Slurm client program against this cluster and returns its
// standard output (its standard error goes into the error); each call is
// limited to 30 s.
func (c *cluster) command(ctx context.Context, name string, args ...string) (string, error) {
	return c.commandEnv(ctx, nil, name, args...)
}

// commandEnv is command with extra environment entries.
func (c *cluster) commandEnv(ctx context.Context, extra []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bins[name], args...)
	cmd.Env = append(slices.Clip(c.env), extra...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // warnings stay out of the output parsed
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s%s", name, strings.Join(args, " "), err, bytes.TrimSpace(out), bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// logTails is the end of every daemon's log, for a failure message.
func (c *cluster) logTails() string {
	var b strings.Builder
	files := []string{"munged.out", "munge/munged.log", "slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", f, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// teardown cancels every job, stops the daemons (TERM, then KILL after 10 s),
// then ends any process still carrying this cluster's marker, and removes
// the cluster's directory. A process that survives SIGKILL fails the test.
func (c *cluster) teardown(t *testing.T) {
	if c.tornDown {
		return
	}
	c.tornDown = true
	if t.Failed() {
		t.Logf("Slurm logs:\n%s", c.logTails())
	}
	c.cancelJobs(t)
	for i := len(c.daemons) - 1; i >= 0; i-- {
		d := c.daemons[i]
		pg := -d.cmd.Process.Pid
		syscall.Kill(pg, syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			t.Logf("teardown: %s ignored SIGTERM for 10 s; killing it", d.name)
			syscall.Kill(pg, syscall.SIGKILL)
			<-d.done
		}
		syscall.Kill(pg, syscall.SIGKILL) // anything left in its group
	}
	// What Slurm started outside the daemons' process groups (slurmstepd,
	// job scripts and their children) is found by its marker.
	left := markedProcesses(c.dir)
	if len(left) > 0 {
		t.Logf("teardown: ending processes left by the cluster: %v", left)
		for _, p := range left {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(left) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			left = markedProcesses(c.dir)
		}
		if len(left) > 0 {
			t.Errorf("processes of the Slurm cluster survive SIGKILL: %v", left)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("removing the cluster's directory: %v", err)
	}
}

// cancelJobs cancels every job of the cluster and waits (at most 45 s:
// longer than KillWait) until none is left, so that nothing writes into a
// directory about to be removed.
func (c *cluster) cancelJobs(t *testing.T) {
	ctld := c.daemon("slurmctld")
	if ctld == nil || ctld.exited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	out, err := c.command(ctx, "squeue", "-h", "-o", "%i")
	if err != nil || strings.TrimSpace(out) == "" {
		return
	}
	if _, err := c.command(ctx, "scancel", strings.Fields(out)...); err != nil {
		t.Logf("cancelling jobs: %v", err)
	}
	err = c.waitFor(ctx, "cancelled jobs to end", func() (bool, string) {
		out, err := c.command(ctx, "squeue", "-h", "-o", "%i %T")
		return err == nil && strings.TrimSpace(out) == "", out
	})
	if err != nil {
		t.Logf("cancelling jobs: %v", err)
	}
}

func (c *cluster) daemon(name string) *daemon {
	for _, d := range c.daemons {
		if d.name == name {
			return d
		}
	}
	return nil
}

// allIn reports whether every string of want is in have.
func allIn(want, have []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

type proc struct {
	pid  int
	name string
}

func (p proc) String() string { return fmt.Sprintf("%d (%s)", p.pid, p.name) }

// markedProcesses lists the live processes whose environment holds
// markerVar=dir and every entry in also (a zombie's environment reads
// empty).
func markedProcesses(dir string, also ...string) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := append([]string{markerVar + "=" + dir}, also...)
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or not ours to read
		}
		entries := strings.Split(string(env), "\x00")
		if !allIn(want, entries) {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		ps = append(ps, proc{pid: pid, name: strings.TrimSpace(string(comm))})
	}
	return ps
}

// task is one array task as scontrol shows it.
type task struct {
	ID     int    // ArrayTaskId
	JobID  string // its own job id
	State  string // JobState
	Exit   string // ExitCode "status:signal"
	Reason string
}

// terminal reports whether a job state is final.
func terminal(state string) bool {
	switch state {
	case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE":
		return true
	}
	return false
}

// tasks returns the array job's tasks that have a record of their own (a
// pending remainder shows as one record with a range of task ids, skipped).
func (c *cluster) tasks(ctx context.Context, job string) (map[int]task, error) {
	out, err := c.command(ctx, "scontrol", "-o", "show", "job", job)
	if err != nil {
		return nil, err
	}
	ts := map[int]task{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		id, err := strconv.Atoi(kv["ArrayTaskId"])
		if err != nil {
			continue
		}
		ts[id] = task{ID: id, JobID: kv["JobId"], State: kv["JobState"], Exit: kv["ExitCode"], Reason: kv["Reason"]}
	}
	return ts, nil
}

// waitTasks waits until every task in ids of the array job has ended and
// returns them.
func (c *cluster) waitTasks(ctx context.Context, job string, ids ...int) (map[int]task, error) {
	var ts map[int]task
	err := c.waitFor(ctx, fmt.Sprintf("job %s's tasks %v to end", job, ids), func() (bool, string) {
		var err error
		ts, err = c.tasks(ctx, job)
		if err != nil {
			return false, err.Error()
		}
		for _, id := range ids {
			if tk, ok := ts[id]; !ok || !terminal(tk.State) {
				return false, fmt.Sprint(ts)
			}
		}
		return true, ""
	})
	return ts, err
}

// sbatch submits a batch job and returns its id. extraEnv is added to the
// environment sbatch exports to the job.
func (c *cluster) sbatch(ctx context.Context, extraEnv []string, args ...string) (string, error) {
	out, err := c.commandEnv(ctx, extraEnv, "sbatch", append([]string{"--parsable"}, args...)...)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";") // "id;cluster" on a federation
	if _, err := strconv.Atoi(id); err != nil {
		return "", fmt.Errorf("sbatch printed %q, not a job id", out)
	}
	return id, nil
}
