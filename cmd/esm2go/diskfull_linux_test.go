//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCLIChildFsize runs the CLI with the arguments in ESM2GO_CLI_ARGS
// under a file-size limit of ESM2GO_FSIZE bytes: a file that would grow
// past it fails to (EFBIG; Go ignores SIGXFSZ), as it would on a full
// disk.
func TestCLIChildFsize(t *testing.T) {
	js, limit := os.Getenv("ESM2GO_CLI_ARGS"), os.Getenv("ESM2GO_FSIZE")
	if js == "" || limit == "" {
		t.Skip("only runs as the child of TestDiskFull")
	}
	n, err := strconv.ParseUint(limit, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		t.Fatal(err)
	}
	var args []string
	if err := json.Unmarshal([]byte(js), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(context.Background(), args, os.Stdout, os.Stderr))
}

// TestDiskFull: a run whose output cannot grow (the disk is full) stops
// with one clear error naming the file and the cause and saying which
// records are committed and how to resume; run again with room, it
// completes, and the output equals an uninterrupted run's.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"parquet", "npy"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := func(out string) []string {
				return []string{"embed", "--model", tinyModel, "--device", "cpu", "--format", format, "-q",
					"--include", "mean,per_tok", "--toks-per-batch", "1100", "--commit-rows", "3", "-o", out, fasta}
			}
			ref := filepath.Join(dir, "ref")
			if cmd, stderr := startCLI(t, args(ref)...); cmd.Wait() != nil {
				t.Fatalf("uninterrupted run: %s", stderr)
			}
			out := filepath.Join(dir, "out")
			js, _ := json.Marshal(args(out))
			cmd := exec.Command(os.Args[0], "-test.run=^TestCLIChildFsize$")
			// 200 KiB: the first commits fit, the per-token values of the
			// 15 records (about 1 MB) do not.
			cmd.Env = append(os.Environ(), "ESM2GO_CLI_ARGS="+string(js), "ESM2GO_FSIZE=409600")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			msg := stderr.String()
			if err == nil {
				t.Fatalf("the run succeeded under a 400 KiB file-size limit: %s", msg)
			}
			if strings.Count(msg, "file too large") != 1 || !strings.Contains(msg, out+".parts") ||
				!strings.Contains(msg, "run the same command again to resume") {
				t.Errorf("want one error naming the cause, the parts and how to resume, got: %s", msg)
			}
			if cmd, stderr := startCLI(t, args(out)...); cmd.Wait() != nil {
				t.Fatalf("run with room: %s", stderr)
			}
			if got, want := readOutput(t, out), readOutput(t, ref); !reflect.DeepEqual(got, want) {
				t.Errorf("the resumed output differs from the uninterrupted run's")
			}
			if _, err := os.Stat(out + ".parts"); !os.IsNotExist(err) {
				t.Errorf("parts directory left: %v", err)
			}
		})
	}
}
