package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esm2go/esm2go/output"
)

// TestCLIChild runs the CLI with the arguments in ESM2GO_CLI_ARGS and exits
// with its status: the child process of the kill tests.
func TestCLIChild(t *testing.T) {
	t.Parallel()
	js := os.Getenv("ESM2GO_CLI_ARGS")
	if js == "" {
		t.Skip("only runs as the child of a kill test")
	}
	var args []string
	if err := json.Unmarshal([]byte(js), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(context.Background(), args, os.Stdout, os.Stderr))
}

// cliChild is the command that runs the CLI with args in a child process
// (this test binary, as TestCLIChild).
func cliChild(args ...string) *exec.Cmd {
	js, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIChild$")
	cmd.Env = append(os.Environ(), "ESM2GO_CLI_ARGS="+string(js))
	return cmd
}

func startCLI(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := cliChild(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stderr
}

// readOutput returns records.tsv and every array of an npy output; of a
// parquet output, its rows as read back (values bit for bit).
func readOutput(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	if info, err := os.Stat(dir); err == nil && !info.IsDir() {
		r, err := output.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for i := 0; ; i++ {
			var row output.Row
			if err := r.Next(&row); err != nil {
				break
			}
			b, _ := json.Marshal(struct {
				ID     string
				Index  int64
				Length int
				Trunc  bool
				Bits   [][]uint32
			}{row.ID, row.Index, row.Length, row.Truncated, bits(row.Values)})
			out[fmt.Sprintf("row %d", i)] = b
		}
		return out
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "metadata.json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// TestKillAndResume kills embed with SIGKILL at random moments (while
// reading, computing, committing a chunk, fsyncing, merging, publishing)
// and runs it again until it completes: the output must be byte-identical
// to an uninterrupted run's (the CPU computes the same batches again:
// resuming replays the window it stopped in), with no record lost or
// written twice and nothing left behind.
func TestKillAndResume(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"npy", "parquet"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			killAndResume(t, format)
		})
	}
}

// bits is each value's float32 bits.
func bits(vals [][]float32) [][]uint32 {
	out := make([][]uint32, len(vals))
	for i, v := range vals {
		out[i] = make([]uint32, len(v))
		for j, x := range v {
			out[i][j] = math.Float32bits(x)
		}
	}
	return out
}

func killAndResume(t *testing.T, format string) {
	dir := t.TempDir()
	args := func(out string) []string {
		return []string{"embed", "--model", tinyModel, "--device", "cpu", "--format", format, "-q",
			"--include", "mean,per_tok", "--toks-per-batch", "1100", "--truncation-seq-length", "300", "--commit-rows", "2", "-o", out, fasta}
	}
	ref := filepath.Join(dir, "ref")
	start := time.Now()
	if cmd, stderr := startCLI(t, args(ref)...); cmd.Wait() != nil {
		t.Fatalf("uninterrupted run: %s", stderr)
	}
	full := time.Since(start)
	want := readOutput(t, ref)

	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 7))
	t.Logf("seed %d; an uninterrupted run takes %v", seed, full)
	out := filepath.Join(dir, "out")
	kills := 0
	for attempt := 0; ; attempt++ {
		cmd, stderr := startCLI(t, args(out)...)
		if attempt >= 12 {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("final run: %v: %s", err, stderr)
			}
			break
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: %v: %s", attempt, err, stderr)
			}
		case <-time.After(time.Duration(r.Int64N(int64(full)))):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			kills++
			continue
		}
		break // completed
	}
	t.Logf("killed %d times before a run completed", kills)
	if got := readOutput(t, out); !reflect.DeepEqual(got, want) {
		for k := range want {
			if !reflect.DeepEqual(got[k], want[k]) {
				t.Errorf("%s differs from the uninterrupted run", k)
			}
		}
		t.FailNow()
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "out ref" {
		t.Errorf("left behind: %v", names)
	}
	if _, err := os.Stat(out + output.PartsSuffix); !os.IsNotExist(err) {
		t.Error(fmt.Sprint("parts directory left: ", err))
	}
}
