package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/output"
)

// These tests build esm2go the ways the README shows and run the binaries.
// They need the go command (and make, git for the version stamp), so they
// skip on the GPU host, which runs test binaries built elsewhere; and in
// -short mode (a cold build takes tens of seconds on 2 cores).

// goTool runs the go command in the repository root with extra environment
// and returns its combined output, failing the test on an error.
func goTool(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return runIn(t, testutil.RepoRoot(), env, "go", args...)
}

func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out[:min(len(out), 4000)])
	}
	return string(out)
}

// smallFASTA writes two short records (a quick embed with the tiny model).
func smallFASTA(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "small.fasta")
	if err := os.WriteFile(p, []byte(">a\nMKTAYIAKQRQISFVKSHFSRQ\n>b\nMLKKRSSVAELG\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds esm2go: skipped in -short mode")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on PATH: %v", tool, err)
		}
	}
}

// The pure-Go build (CGO_ENABLED=0) vets and builds, through the Makefile
// (so one link serves both checks): the binary carries the version of
// scripts/version.sh (git describe and the commit date), `esm2go version`
// prints it and an embed output's esm2go_version metadata holds it; it
// embeds on the CPU, and asked for CUDA it says that CUDA needs the cgo
// build. Without make or git it builds with go alone and skips the version
// checks.
func TestPureGoBuildAndVersion(t *testing.T) {
	needTools(t, "go")
	root := testutil.RepoRoot()
	nocgo := []string{"CGO_ENABLED=0"}
	goTool(t, nocgo, "vet", "./...")

	bin := filepath.Join(t.TempDir(), "esm2go")
	var want string // the version stamp, "" when not checked
	_, errMake := exec.LookPath("make")
	_, errGit := exec.LookPath("git")
	if errMake == nil && errGit == nil {
		want = strings.TrimSpace(runIn(t, root, nil, "scripts/version.sh"))
	}
	if want != "" {
		runIn(t, root, nocgo, "make", "-s", "build", "BIN="+bin)
		got := runIn(t, root, nil, bin, "version")
		if !strings.HasPrefix(got, "esm2go "+want+" ") || strings.Contains(got, "devel") {
			t.Errorf("esm2go version printed %q, want the stamp %q", got, want)
		}
	} else {
		t.Log("no make, git or checkout: the version stamp is not checked")
		goTool(t, nocgo, "build", "-o", bin, "./cmd/esm2go")
	}

	out := filepath.Join(t.TempDir(), "emb.parquet")
	runIn(t, root, nil, bin, "embed", "--model", testutil.TinyModelDir(), "--device", "cpu", "--out", out, smallFASTA(t))
	r, err := output.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != 2 {
		t.Errorf("the pure-Go build wrote %d rows, want 2", r.Len())
	}
	if v := r.Schema().Metadata["esm2go_version"]; want != "" && v != want {
		t.Errorf("output metadata esm2go_version = %q, want %q", v, want)
	}

	cmd := exec.CommandContext(t.Context(), bin, "embed", "--model", testutil.TinyModelDir(), "--device", "cuda",
		"--out", filepath.Join(t.TempDir(), "x.parquet"), smallFASTA(t))
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "CUDA needs the cgo build") {
		t.Errorf("--device cuda on the pure-Go build: %v\n%s\nwant a failure saying that CUDA needs the cgo build", err, msg)
	}
}
