package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	esmcuda "github.com/esm2go/esm2go/esm/cuda"
	"github.com/parquet-go/parquet-go"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const (
	tinyModel = "../../tests/testdata/models/tiny" // 3 layers, D=64, 4 heads
	fasta     = "../../tests/testdata/fairesm_some_proteins.fasta"
	fastaRecs = 15
)

// runCLI runs the program with args and returns status, stdout, stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestInfoTiny(t *testing.T) {
	t.Parallel()
	code, out, errs := runCLI(t, "info", "--model", tinyModel)
	if code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	// The tiny fixture: V=33, D=64, F=256, L=3, with an LM head and a contact head.
	const V, D, F, L = 33, 64, 256, 3
	layer := 4*(D*D+D) + 2*2*D + (F*D + F) + (D*F + D) // q,k,v,o; 2 LayerNorms; FFN
	lmHead := (D*D + D) + 2*D + V                      // dense, layer_norm, bias (decoder tied)
	params := V*D + L*layer + 2*D + lmHead + (4*L + 1) // + final LN + contact regression (L*H → 1)
	for _, want := range []string{
		"format:          safetensors",
		"layers:          3\n",
		"dim:             64\n",
		"heads:           4\n",
		"head dim:        16\n",
		"ffn:             256\n",
		"vocab:           33\n",
		"parameters:      " + groupDigits(int64(params)) + " ",
		"dtypes:          F32 (61 tensors)",
		"token dropout:   true",
		"rotary inv_freq: from the checkpoint (8 values",
		"lm head:         yes",
		"contact head:    yes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("info output lacks %q:\n%s", want, out)
		}
	}

	golden := filepath.Join("testdata", "info_tiny.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("info output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, out, want)
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.parquet")
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"embed", "--bogus", "--out", out, fasta}, "unknown flag: --bogus"},
		{"mistyped flag", []string{"embed", "--repr-layer", "3", "--out", out, fasta}, "unknown flag: --repr-layer (did you mean --repr-layers?)"},
		{"bad include", []string{"embed", "--include", "mean,logits", "--out", out, fasta}, `invalid --include: unknown representation "logits"`},
		{"contacts", []string{"embed", "--include", "contacts", "--out", out, fasta}, "contact maps are not supported"},
		{"bad format", []string{"embed", "--format", "hdf5", "--out", out, fasta}, `invalid --format "hdf5"`},
		{"missing out", []string{"embed", fasta}, "--out is required"},
		{"no input", []string{"embed", "--out", out}, "no FASTA input given"},
		{"bad device", []string{"embed", "--device", "tpu", "--out", out, fasta}, `invalid --device "tpu"`},
		{"bad precision", []string{"embed", "--precision", "int8", "--out", out, fasta}, `invalid --precision "int8"`},
		{"bad log format", []string{"embed", "--log-format", "xml", "--out", out, fasta}, `invalid --log-format "xml"`},
		{"bad layers syntax", []string{"embed", "--repr-layers", "x", "--out", out, fasta}, "--repr-layers"},
		{"zero truncation", []string{"embed", "--truncation-seq-length", "0", "--out", out, fasta}, "invalid --truncation-seq-length 0"},
		{"small batch", []string{"embed", "--toks-per-batch", "100", "--out", out, fasta}, "cannot hold one sequence"},
		{"bad workers", []string{"embed", "--workers", "0", "--out", out, fasta}, "invalid --workers 0"},
		{"layer out of range", []string{"embed", "--model", tinyModel, "--device", "cpu", "--repr-layers", "4", "--out", out, fasta}, "--repr-layers: esm: layer 4 out of range"},
		{"negative layer out of range", []string{"embed", "--model", tinyModel, "--device", "cpu", "--repr-layers=-5", "--out", out, fasta}, "--repr-layers: esm: layer -5 out of range"},
		{"info argument", []string{"info", tinyModel}, "info takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != 2 {
				t.Errorf("status %d, want 2; stderr:\n%s", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout not empty: %q", stdout)
			}
			first, rest, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "esm2go: ") || !strings.Contains(first, tc.want) {
				t.Errorf("first stderr line %q, want one line containing %q", first, tc.want)
			}
			if !strings.Contains(rest, "Usage:") && !strings.Contains(rest, "Run 'esm2go help embed' for the flags.") {
				t.Errorf("no usage, or pointer to it, after the error:\n%s", stderr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s was written", out)
			}
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists.parquet")
	if err := os.WriteFile(exists, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing input", []string{"embed", "--out", filepath.Join(dir, "a.parquet"), filepath.Join(dir, "nope.fasta")}, "nope.fasta"},
		{"output exists", []string{"embed", "--model", tinyModel, "--out", exists, fasta}, "use --overwrite"},
		{"missing model dir", []string{"info", "--model", filepath.Join(dir, "nomodel") + "/"}, "nomodel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != 1 {
				t.Errorf("status %d, want 1; stderr:\n%s", code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "esm2go: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q, want one line containing %q", stderr, tc.want)
			}
		})
	}
}

func TestDeviceCUDAWithoutGPU(t *testing.T) {
	t.Parallel()
	if _, err := esmcuda.Probe(); err == nil {
		t.Skip("a usable GPU is present")
	}
	out := filepath.Join(t.TempDir(), "x.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cuda", "--out", out, fasta)
	if code != 1 {
		t.Errorf("status %d, want 1; stderr:\n%s", code, stderr)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "esm2go: --device cuda: ") {
		t.Errorf("stderr %q, want one line starting with the reason for --device cuda", stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s was written", out)
	}

	// auto falls back to the CPU and says so in one line that is not a
	// warning: there is no GPU here.
	code, _, stderr = runCLI(t, "embed", "--model", tinyModel, "--threads", "2", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("auto: status %d; stderr:\n%s", code, stderr)
	}
	// (A pure-Go build says that it has no GPU support instead.)
	if !regexp.MustCompile(`(?m)^esm2go: (no GPU found|no GPU support in this build \(CGO_ENABLED=0: CUDA needs the cgo build\)); running on the CPU \(2 threads\)$`).MatchString(stderr) ||
		strings.Contains(stderr, "level=WARN") || strings.Contains(stderr, "level=ERROR") {
		t.Errorf("auto: no fallback note, or a warning, in stderr:\n%s", stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"help", "embed"}, {"embed", "--help"}, {"info", "-h"}} {
		code, out, errs := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") || errs != "" {
			t.Errorf("%v: status %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	_, out, _ := runCLI(t, "help", "embed")
	for _, fl := range []string{"--model", "--out", "--format", "--include", "--repr-layers", "--truncation-seq-length",
		"--toks-per-batch", "--device", "--precision", "--workers", "--prefetch", "--strict", "--overwrite",
		"--threads", "--quiet", "--log-format"} {
		if !strings.Contains(out, fl) {
			t.Errorf("embed usage lacks %s", fl)
		}
	}
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "esm2go ") {
		t.Errorf("version: status %d, %q", code, out)
	}
}

func TestEmbedNPY(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb")
	// fair-esm spellings (underscores, a negative layer as a separate argument) work too.
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy",
		"--include", "mean", "--include", "per_tok", "--repr_layers", "-1", "--repr-layers", "0,3",
		"--out", out, fasta)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "esm2go: done: 15 records embedded of 15 read\n") {
		t.Errorf("no summary line in stderr:\n%s", stderr)
	}
	if got := npyShape(t, filepath.Join(out, "mean_3.npy")); got != [2]int{fastaRecs, 64} {
		t.Errorf("mean_3.npy shape %v, want (%d, 64)", got, fastaRecs)
	}
	if got := npyShape(t, filepath.Join(out, "mean_0.npy")); got != [2]int{fastaRecs, 64} {
		t.Errorf("mean_0.npy shape %v, want (%d, 64)", got, fastaRecs)
	}
	if _, err := os.Stat(filepath.Join(out, "per_tok_3.offsets.npy")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(out, "mean_-1.npy")); err == nil {
		t.Error("layer -1 written under its raw name; want it once, as mean_3")
	}
	meta, err := os.ReadFile(filepath.Join(out, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"layers": "3,0"`, `"include": "mean,per_tok"`, `"truncation_seq_length": "1022"`, `"esm2go_version"`, `"model": "` + tinyModel + `"`} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("metadata.json lacks %s:\n%s", want, meta)
		}
	}

	// Again: the same run is already complete; another run (other
	// layers) is refused without --overwrite; with it, it succeeds.
	if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "--include", "mean,per_tok",
		"--repr-layers", "-1,0", "--out", out, fasta); code != 0 || !strings.Contains(stderr, "already complete") {
		t.Errorf("same run again: status %d, stderr %q", code, stderr)
	}
	if code, _, _ := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "--out", out, fasta); code != 1 {
		t.Errorf("another run without --overwrite: status %d, want 1", code)
	}
	if code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--format", "npy", "--overwrite", "--quiet", "--out", out, fasta); code != 0 || stderr != "" {
		t.Errorf("--overwrite --quiet: status %d, stderr %q", code, stderr)
	}
}

func TestEmbedParquet(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "emb.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--include", "mean,bos",
		"--log-format", "json", "--toks-per-batch", "1100", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("status %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `"msg":"done","records":15,"embedded":15`) {
		t.Errorf("no json summary line in stderr:\n%s", stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if n := pf.NumRows(); n != fastaRecs {
		t.Errorf("%d rows, want %d", n, fastaRecs)
	}
	var cols []string
	for _, fl := range pf.Schema().Fields() {
		cols = append(cols, fl.Name())
	}
	if got, want := strings.Join(cols, ","), "id,index,length,truncated,mean_3,bos_3"; got != want {
		t.Errorf("columns %s, want %s", got, want)
	}
	if v, ok := pf.Lookup("model"); !ok || v != tinyModel {
		t.Errorf("metadata model = %q, %v", v, ok)
	}
}

// npyShape reads the 2-D shape from an NPY 1.0 header.
func npyShape(t *testing.T, path string) [2]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		t.Fatalf("%s: not an NPY file", path)
	}
	hlen := int(binary.LittleEndian.Uint16(b[8:10]))
	hdr := string(b[10 : 10+hlen])
	if !strings.Contains(hdr, "'descr': '<f4'") {
		t.Errorf("%s: header %q, want float32", path, hdr)
	}
	m := regexp.MustCompile(`'shape': \((\d+), (\d+)\)`).FindStringSubmatch(hdr)
	if m == nil {
		t.Fatalf("%s: no 2-D shape in header %q", path, hdr)
	}
	r, _ := strconv.Atoi(m[1])
	c, _ := strconv.Atoi(m[2])
	if want := 10 + hlen + r*c*4; len(b) != want {
		t.Errorf("%s: %d bytes, want %d for shape (%d, %d)", path, len(b), want, r, c)
	}
	return [2]int{r, c}
}
