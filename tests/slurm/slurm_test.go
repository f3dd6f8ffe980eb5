package slurm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esm2go/esm2go/output"
)

// embedFlags are the options of every esm2go run here. With
// --truncation-seq-length 150 and --toks-per-batch 152 (its minimum) no two
// records of the fixture fit in one batch (the two shortest take 73+82
// tokens), so every batch holds one record whichever shard or resumed run
// computes it: the CPU then gives bit-identical values, and the outputs are
// compared exactly.
var embedFlags = []string{"--device", "cpu", "--threads", "1", "--include", "mean,per_tok",
	"--truncation-seq-length", "150", "--toks-per-batch", "152"}

const fixtureFASTA = "../testdata/fairesm_some_proteins.fasta"

// TestSlurm starts a one-node Slurm cluster and runs esm2go through it.
func TestSlurm(t *testing.T) {
	bins := requireSlurm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := &testEnv{}
	env.bin = buildESM2GO(t)
	var err error
	if env.model, err = filepath.Abs("../testdata/models/tiny"); err != nil {
		t.Fatal(err)
	}
	if env.deploy, err = filepath.Abs("../../deploy/slurm/embed.sbatch"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	env.c = startCluster(t, ctx, bins)
	t.Logf("cluster up in %v (%d CPUs)", time.Since(start).Round(time.Millisecond), env.c.cpus)
	t.Run("ArrayShardsMerge", func(t *testing.T) { testArrayShardsMerge(t, ctx, env) })
	t.Run("StopAndResume", func(t *testing.T) { testStopAndResume(t, ctx, env) })
}

type testEnv struct {
	c      *cluster
	bin    string // the esm2go binary
	model  string // tests/testdata/models/tiny
	deploy string // deploy/slurm/embed.sbatch
}

// buildESM2GO builds the command into a temporary directory.
func buildESM2GO(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "esm2go")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/esm2go/esm2go/cmd/esm2go")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built esm2go in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// esm2go runs the binary outside Slurm and fails the test on a non-zero
// status.
func (e *testEnv) esm2go(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(e.bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("esm2go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// testArrayShardsMerge: a three-task array job, each task `esm2go embed
// --shard auto` (its shard read from Slurm's array variables), merged, equals
// one unsharded run: same ids, order, lengths and bits.
func testArrayShardsMerge(t *testing.T, ctx context.Context, e *testEnv) {
	work := t.TempDir()
	t.Cleanup(func() { e.c.cancelJobs(t) }) // before work is removed: jobs write there
	fasta, err := filepath.Abs(fixtureFASTA)
	if err != nil {
		t.Fatal(err)
	}
	cmd := []string{shellQuote(e.bin), "embed", "--model", shellQuote(e.model)}
	cmd = append(cmd, embedFlags...)
	cmd = append(cmd, "--shard", "auto", "--out", shellQuote(work)+`/shard_"$SLURM_ARRAY_TASK_ID".parquet`, shellQuote(fasta))
	script := filepath.Join(work, "embed.sh")
	if err := os.WriteFile(script, []byte("#!/bin/bash\nset -eu\nexec "+strings.Join(cmd, " ")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	job, err := e.c.sbatch(ctx, nil, "--array=0-2", "--cpus-per-task=1", "--chdir="+work,
		"--output="+filepath.Join(work, "task_%a.log"), script)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := e.c.waitTasks(ctx, job, 0, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("array job %s: 3 tasks done in %v", job, time.Since(start).Round(time.Millisecond))
	var shards []string
	for i := range 3 {
		log, _ := os.ReadFile(filepath.Join(work, fmt.Sprintf("task_%d.log", i)))
		if tk := ts[i]; tk.State != "COMPLETED" || tk.Exit != "0:0" {
			t.Fatalf("task %d: %s, exit %s (%s); its log:\n%s", i, tk.State, tk.Exit, tk.Reason, log)
		}
		// --shard auto took the shard from Slurm's variables.
		if want := fmt.Sprintf("shard=%d/3 from=SLURM_ARRAY_TASK_ID", i); !strings.Contains(string(log), want) {
			t.Errorf("task %d's log does not say %q:\n%s", i, want, log)
		}
		shards = append(shards, filepath.Join(work, fmt.Sprintf("shard_%d.parquet", i)))
	}
	merged := filepath.Join(work, "merged.parquet")
	e.esm2go(t, append([]string{"merge", merged}, shards...)...)
	single := filepath.Join(work, "single.parquet")
	e.esm2go(t, append(append([]string{"embed", "--model", e.model, "-q", "--out", single}, embedFlags...), fasta)...)
	if n := compareOutputs(t, merged, single); n != 15 {
		t.Errorf("compared %d rows; the fixture has 15 records", n)
	}
}

// testStopAndResume runs deploy/slurm/embed.sbatch as shipped (resources
// reduced on the sbatch command line, model and device overridden by its
// extra arguments) as a three-task array over a larger input, and stops each
// task once it has committed rows, in the three ways a task ends early:
//
//   - task 0: SIGTERM to the batch shell (esm2go, exec'd), what the script's
//     --signal=B:TERM@120 delivers before the time limit;
//   - task 1: scancel, what the time limit itself does (SIGTERM to every
//     process, SIGKILL KillWait seconds later);
//   - task 2: SIGKILL to esm2go, as a node failure or the OOM killer would.
//
// Each is then resubmitted alone with the same arguments. It must resume:
// its log says so, it resumes exactly the rows that were committed when it
// stopped, and those plus the rows it embeds now are its whole shard. The
// merged result must equal one uninterrupted run, bit for bit.
func testStopAndResume(t *testing.T, ctx context.Context, e *testEnv) {
	work := t.TempDir()
	t.Cleanup(func() { e.c.cancelJobs(t) }) // before work is removed: jobs write there
	fasta := filepath.Join(work, "big.fasta")
	// 1,500 records: 500 per shard, over a second each on a 2-core machine (100 per
	// shard took 0.3 s there, and a task once finished before its stop landed).
	const copies = 100
	records := repeatFASTA(t, fixtureFASTA, fasta, copies)
	const shards = 3
	prefix := filepath.Join(work, "emb")
	var outs []string
	for i := range shards {
		outs = append(outs, fmt.Sprintf("%s.shard-%d.parquet", prefix, i))
	}

	// Resources shrink to this node; everything else is the script's own.
	// esm2go is found on PATH, as on a cluster.
	pathEnv := []string{"PATH=" + filepath.Dir(e.bin) + string(os.PathListSeparator) + os.Getenv("PATH")}
	submit := func(array string) string {
		t.Helper()
		args := []string{"--array=" + array, "--cpus-per-task=1", "--mem=256M", "--time=10", "--chdir=" + work,
			"--output=" + filepath.Join(work, "embed-%A_%a.log"),
			e.deploy, fasta, prefix, fmt.Sprint(shards), "--model", e.model}
		args = append(args, embedFlags...)
		args = append(args, "--commit-rows", "1", "--log-format", "json")
		job, err := e.c.sbatch(ctx, pathEnv, args...)
		if err != nil {
			t.Fatal(err)
		}
		return job
	}
	taskLog := func(job string, i int) string {
		b, _ := os.ReadFile(filepath.Join(work, fmt.Sprintf("embed-%s_%d.log", job, i)))
		return string(b)
	}

	start := time.Now()
	job := submit(fmt.Sprintf("0-%d", shards-1))
	stops := []struct {
		how         string
		stop        func() error
		state, exit string // what scontrol shows after it
	}{
		{"SIGTERM to the batch shell", func() error {
			_, err := e.c.command(ctx, "scancel", "--batch", "--signal=TERM", job+"_0")
			return err
		}, "FAILED", "130:0"}, // esm2go's status for an interrupted run
		{"scancel", func() error {
			_, err := e.c.command(ctx, "scancel", job+"_1")
			return err
		}, "CANCELLED", "130:0"}, // esm2go stopped on the SIGTERM, before the SIGKILL
		{"SIGKILL to esm2go", func() error {
			ps := markedProcesses(e.c.dir, "SLURM_ARRAY_JOB_ID="+job, "SLURM_ARRAY_TASK_ID=2")
			var pids []proc
			for _, p := range ps {
				if p.name == "esm2go" {
					pids = append(pids, p)
				}
			}
			if len(pids) != 1 {
				return fmt.Errorf("want one esm2go process of task 2, found %v", ps)
			}
			return syscall.Kill(pids[0].pid, syscall.SIGKILL)
		}, "FAILED", "0:9"},
	}
	// Stop each task as soon as it has committed a chunk (two run at a
	// time: the node has two stand-in GPUs).
	stopped := make([]bool, shards)
	err := e.c.waitFor(ctx, "every task to commit a chunk", func() (bool, string) {
		ts, err := e.c.tasks(ctx, job)
		if err != nil {
			return false, err.Error()
		}
		var notes []string
		for i, out := range outs {
			if stopped[i] {
				continue
			}
			if tk, ok := ts[i]; ok && terminal(tk.State) {
				t.Fatalf("task %d ended (%s, exit %s) before it could be stopped: the input is too small, or esm2go failed; its log:\n%s",
					i, tk.State, tk.Exit, taskLog(job, i))
			}
			chunks, rows, err := committed(out)
			if err != nil || chunks == 0 {
				notes = append(notes, fmt.Sprintf("task %d: %v", i, err))
				continue
			}
			if err := stops[i].stop(); err != nil {
				t.Fatalf("stopping task %d: %v", i, err)
			}
			stopped[i] = true
			t.Logf("task %d: %s after %d rows in %d chunks were committed", i, stops[i].how, rows, chunks)
		}
		return !slices.Contains(stopped, false), strings.Join(notes, "; ")
	})
	if err != nil {
		ts, _ := e.c.tasks(ctx, job)
		t.Fatalf("%v\ntasks: %v\ntask 0's log:\n%s", err, ts, taskLog(job, 0))
	}
	ts, err := e.c.waitTasks(ctx, job, 0, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	kept := make([]int64, shards) // rows committed when each task ended
	for i, s := range stops {
		log := taskLog(job, i)
		if tk := ts[i]; tk.State != s.state || tk.Exit != s.exit {
			t.Errorf("task %d after %s: %s, exit %s (%s); want %s, exit %s; its log:\n%s",
				i, s.how, tk.State, tk.Exit, tk.Reason, s.state, s.exit, log)
		}
		if _, err := os.Stat(outs[i]); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("task %d was stopped, yet its output %s exists (%v): the input is too small to stop a task mid-run", i, outs[i], err)
		}
		chunks, rows, err := committed(outs[i])
		if err != nil || chunks == 0 {
			t.Fatalf("task %d after %s: %d chunks, %d rows committed (%v)", i, s.how, chunks, rows, err)
		}
		kept[i] = rows
		if s.exit == "130:0" && !strings.Contains(log, "resumable") {
			t.Errorf("task %d did not report what it committed on SIGTERM; its log:\n%s", i, log)
		}
	}
	if t.Failed() {
		return
	}

	// Resubmit each task alone, with the same arguments.
	var resub []string
	for i := range shards {
		resub = append(resub, submit(fmt.Sprint(i)))
	}
	var total int64
	for i, job := range resub {
		ts, err := e.c.waitTasks(ctx, job, i)
		if err != nil {
			t.Fatal(err)
		}
		log := taskLog(job, i)
		if tk := ts[i]; tk.State != "COMPLETED" || tk.Exit != "0:0" {
			t.Fatalf("resubmitted task %d: %s, exit %s (%s); its log:\n%s", i, tk.State, tk.Exit, tk.Reason, log)
		}
		resumed, done := resumeLog(log)
		if resumed == nil || done == nil {
			t.Fatalf("resubmitted task %d: no resume or summary line in its log:\n%s", i, log)
		}
		// Every record of the shard was either resumed from the committed
		// chunks or embedded now: none lost, none written twice.
		r, emb, skipped, recs := num(resumed["rows"]), num(done["embedded"]), num(done["skipped"]), num(done["records"])
		if r != kept[i] || emb <= 0 || skipped != 0 || r+emb != recs {
			t.Errorf("resubmitted task %d: resumed %d rows (%d were committed), embedded %d, skipped %d, of %d records: want all committed rows resumed and the rest embedded",
				i, r, kept[i], emb, skipped, recs)
		}
		total += recs
		if _, err := os.Stat(outs[i] + output.PartsSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("task %d: %s%s left after the output was finished (%v)", i, outs[i], output.PartsSuffix, err)
		}
	}
	if total != records {
		t.Errorf("the shards hold %d records; the input has %d", total, records)
	}
	t.Logf("stop and resume through Slurm in %v", time.Since(start).Round(time.Millisecond))

	merged := prefix + ".parquet"
	e.esm2go(t, append([]string{"merge", merged}, outs...)...)
	single := filepath.Join(work, "single.parquet")
	e.esm2go(t, append(append([]string{"embed", "--model", e.model, "-q", "--out", single}, embedFlags...), fasta)...)
	if n := compareOutputs(t, merged, single); n != records {
		t.Errorf("compared %d rows; the input has %d records", n, records)
	}
}

// repeatFASTA writes copies of the FASTA at src to dst, each record's id
// suffixed with _rN so that ids stay unique, and returns the record count.
func repeatFASTA(t *testing.T, src, dst string, copies int) int64 {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var n int64
	for r := range copies {
		for line := range strings.Lines(string(b)) {
			if id, ok := strings.CutPrefix(line, ">"); ok {
				name, rest, _ := strings.Cut(id, " ")
				name = strings.TrimRight(name, "\r\n")
				line = fmt.Sprintf(">%s_r%d %s", name, r, rest)
				if !strings.HasSuffix(line, "\n") {
					line += "\n"
				}
				n++
			}
			out.WriteString(line)
		}
		if !strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		}
	}
	if err := os.WriteFile(dst, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// committed reads a resumable run's manifest (<out>.parts/manifest.json,
// see output/parts.go) and returns its committed chunks and rows.
func committed(out string) (chunks int, rows int64, err error) {
	b, err := os.ReadFile(filepath.Join(out+output.PartsSuffix, "manifest.json"))
	if err != nil {
		return 0, 0, err
	}
	var m struct {
		Chunks []struct {
			Rows int64 `json:"rows"`
		} `json:"chunks"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", out+output.PartsSuffix, err)
	}
	for _, c := range m.Chunks {
		rows += c.Rows
	}
	return len(m.Chunks), rows, nil
}

// resumeLog finds, in a --log-format json log, the "resuming an earlier run"
// line and the final "done" line.
func resumeLog(log string) (resumed, done map[string]any) {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue // Slurm's own lines
		}
		switch m["msg"] {
		case "resuming an earlier run":
			resumed = m
		case "done":
			done = m
		}
	}
	return resumed, done
}

// num is a JSON number as int64 (-1 when absent).
func num(v any) int64 {
	f, ok := v.(float64)
	if !ok {
		return -1
	}
	return int64(f)
}

// compareOutputs fails the test unless the outputs at got and want hold the
// same columns and rows: ids, indices, lengths, truncation flags and every
// value bit for bit. It returns the rows compared.
func compareOutputs(t *testing.T, got, want string) int64 {
	t.Helper()
	g, err := output.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	w, err := output.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	gs, ws := g.Schema(), w.Schema()
	if fmt.Sprint(gs.Columns) != fmt.Sprint(ws.Columns) {
		t.Fatalf("%s has columns %v, %s has %v", got, gs.Columns, want, ws.Columns)
	}
	if g.Len() != w.Len() {
		t.Fatalf("%s has %d rows, %s has %d", got, g.Len(), want, w.Len())
	}
	var gr, wr output.Row
	var n int64
	for ; ; n++ {
		gerr, werr := g.Next(&gr), w.Next(&wr)
		if gerr == io.EOF && werr == io.EOF {
			return n
		}
		if gerr != nil || werr != nil {
			t.Fatalf("row %d: %s: %v; %s: %v", n, got, gerr, want, werr)
		}
		if gr.ID != wr.ID || gr.Index != wr.Index || gr.Length != wr.Length || gr.Truncated != wr.Truncated {
			t.Fatalf("row %d: %s has %q (index %d, length %d, truncated %v), %s has %q (index %d, length %d, truncated %v)",
				n, got, gr.ID, gr.Index, gr.Length, gr.Truncated, want, wr.ID, wr.Index, wr.Length, wr.Truncated)
		}
		for c := range wr.Values {
			if len(gr.Values[c]) != len(wr.Values[c]) {
				t.Fatalf("row %d (%s), column %s: %d values, want %d", n, wr.ID, ws.Columns[c].Name, len(gr.Values[c]), len(wr.Values[c]))
			}
			for k, v := range wr.Values[c] {
				if math.Float32bits(gr.Values[c][k]) != math.Float32bits(v) {
					t.Fatalf("row %d (%s), column %s, value %d: %g, want %g (bit-identical: both ran one record per batch on the CPU)",
						n, wr.ID, ws.Columns[c].Name, k, gr.Values[c][k], v)
				}
			}
		}
	}
}
