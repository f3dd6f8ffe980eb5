package embed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/output"
)

const (
	tinyModel = "../tests/testdata/models/tiny"
	someFASTA = "../tests/testdata/fairesm_some_proteins.fasta"
	junkFASTA = "../data/testdata/pnnl_JunkTest.fasta"
)

func loadTiny(t testing.TB) *esm.Model { return testutil.LoadTiny(t, cpu.Options{}) }

// loadTinyAsync loads the tiny model on the CPU behind esmtest.Async, a fake
// asynchronous backend whose outputs read NaN until their fence is waited.
func loadTinyAsync(t testing.TB, be esm.Backend) (*esm.Model, *esmtest.Async) {
	t.Helper()
	if be == nil {
		be = cpu.New(cpu.Options{})
	}
	ab := esmtest.NewAsync(be)
	m, err := esm.LoadModel(tinyModel, ab)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); ab.Close() })
	return m, ab
}

// checkAsync checks, after a Run on a loadTinyAsync model, that the fake saw
// no violation, that two batches were in flight (when the run had two) and
// that the pipeline freed its output memory.
func checkAsync(t *testing.T, ab *esmtest.Async, batches int64) {
	t.Helper()
	if err := ab.Err(); err != nil {
		t.Error(err)
	}
	if ab.Fences == 0 {
		t.Error("the pipeline did not use the asynchronous path")
	}
	if batches > 1 && ab.MaxOutstanding < 2 {
		t.Errorf("at most %d batch in flight over %d batches, want 2", ab.MaxOutstanding, batches)
	}
	if ab.Outstanding != 0 {
		t.Errorf("%d fences never waited for", ab.Outstanding)
	}
	if ab.Live() != 0 {
		t.Errorf("%d output buffers not freed after Run", ab.Live())
	}
}

// readNPY reads a 2-D float32 .npy file.
func readNPY(t *testing.T, path string) ([]float32, [2]int) {
	t.Helper()
	v, shape := testutil.ReadNPYFloat32(t, path)
	if len(shape) != 2 {
		t.Fatalf("%s: shape %v, want 2-D", path, shape)
	}
	return v, [2]int{shape[0], shape[1]}
}

type record struct {
	index     int64
	id        string
	length    int
	truncated bool
}

func readRecords(t *testing.T, dir string) []record {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "records.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		idx, _ := strconv.ParseInt(p[0], 10, 64)
		l, _ := strconv.Atoi(p[2])
		out = append(out, record{idx, p[1], l, p[3] == "true"})
	}
	return out
}

// direct embeds each record alone with the bare forward pass.
func direct(t *testing.T, m *esm.Model, path string, layer int) (map[int64][]float32, map[int64][]float32) {
	t.Helper()
	rd, err := data.Open(context.Background(), []string{path}, data.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	tok := esm.NewTokenizer(esm.DefaultMaxResidues)
	mean, perTok := map[int64][]float32{}, map[int64][]float32{}
	var b esm.Batch
	var out esm.Output
	D := m.Cfg.Dim
	for {
		blk, err := rd.Next(context.Background())
		if err != nil {
			break
		}
		for _, r := range blk.Records {
			toks, e, err := tok.Encode(nil, r.Seq)
			if err != nil || r.Problem != "" {
				continue
			}
			b.Reset()
			b.Append(toks, e.Masks)
			if err := m.Forward(&b, esm.Request{Layers: []int{layer}, Reprs: esm.Mean | esm.PerTok}, &out); err != nil {
				t.Fatal(err)
			}
			mean[r.Index] = append([]float32(nil), out.Mean[layer]...)
			perTok[r.Index] = append([]float32(nil), out.PerTok[layer][D:(len(toks)-1)*D]...)
		}
	}
	return mean, perTok
}

// The pipeline's output equals the bare forward pass on every record, in
// input order, whatever the worker, prefetch and batch settings.
func TestEmbedEqualsDirectForward(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	L := m.Cfg.Layers
	wantMean, wantTok := direct(t, m, someFASTA, L)
	am, ab := loadTinyAsync(t, nil)
	for _, s := range []struct {
		workers, prefetch, toks int
		async                   bool
	}{{1, 1, 64, false}, {4, 4, 4096, false}, {3, 2, 1500, false}, {2, 8, 100000, false},
		{1, 1, 64, true}, {3, 2, 1500, true}, {2, 8, 100000, true}} {
		name := fmt.Sprintf("w%d_p%d_t%d", s.workers, s.prefetch, s.toks)
		if s.async {
			name += "_async"
		}
		t.Run(name, func(t *testing.T) {
			m := m
			if s.async {
				m = am
			}
			out := filepath.Join(t.TempDir(), "emb")
			sum, err := Run(context.Background(), m, Options{
				Inputs: []string{someFASTA}, Out: out, Format: output.NPY,
				Include: esm.Mean | esm.BOS | esm.PerTok, Layers: []int{-1, 0},
				Workers: s.workers, Prefetch: s.prefetch, ToksPerBatch: s.toks,
			})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Records != 15 || sum.Embedded != 15 || sum.Skipped != 0 || sum.Output != out {
				t.Fatalf("summary %+v", sum)
			}
			recs := readRecords(t, out)
			if len(recs) != 15 {
				t.Fatalf("%d records written", len(recs))
			}
			mean, shape := readNPY(t, filepath.Join(out, fmt.Sprintf("mean_%d.npy", L)))
			tokv, tshape := readNPY(t, filepath.Join(out, fmt.Sprintf("per_tok_%d.npy", L)))
			D := m.Cfg.Dim
			if shape != [2]int{15, D} || tshape[1] != D {
				t.Fatalf("shapes %v %v", shape, tshape)
			}
			off := 0
			for i, r := range recs {
				if r.index != int64(i) {
					t.Fatalf("row %d has index %d: not in input order", i, r.index)
				}
				// Batched vs alone: fp32 BLAS blocking over different T;
				// ~1e-6 relative, 1e-5 is margin.
				if e := testutil.MaxRel(mean[i*D:(i+1)*D], wantMean[r.index]); e > 1e-5 {
					t.Errorf("record %d mean differs by %g", i, e)
				}
				n := r.length * D
				if e := testutil.MaxRel(tokv[off:off+n], wantTok[r.index]); e > 1e-5 {
					t.Errorf("record %d per_tok differs by %g", i, e)
				}
				off += n
			}
			if off != len(tokv) {
				t.Fatalf("per_tok has %d values, records account for %d", len(tokv), off)
			}
			if _, err := os.Stat(out + output.PartsSuffix); !os.IsNotExist(err) {
				t.Fatalf("parts left behind: %v", err)
			}
			if s.async {
				checkAsync(t, ab, sum.Batches)
			}
		})
	}
}

type logCapture struct {
	strings.Builder
}

// Junk input: every unusable record is skipped with a warning naming file,
// line and id; the rest is embedded; --strict turns the first into an error
// and keeps what was written.
func TestEmbedJunk(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	var log logCapture
	out := filepath.Join(t.TempDir(), "junk.parquet")
	sum, err := Run(context.Background(), m, Options{Inputs: []string{junkFASTA}, Out: out,
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != sum.Embedded+sum.Skipped || sum.Skipped == 0 || sum.Embedded == 0 {
		t.Fatalf("summary does not account for every record: %+v", sum)
	}
	warnings := strings.Count(log.String(), "record skipped")
	if int64(warnings) != sum.Skipped {
		t.Fatalf("%d warnings for %d skipped records:\n%s", warnings, sum.Skipped, log.String())
	}
	if !strings.Contains(log.String(), "file=../data/testdata/pnnl_JunkTest.fasta line=") {
		t.Fatalf("warnings do not name file and line:\n%s", log.String())
	}
	t.Logf("junk: %+v\n%s", *sum, log.String())

	strictOut := filepath.Join(t.TempDir(), "strict")
	_, err = Run(context.Background(), m, Options{Inputs: []string{junkFASTA}, Out: strictOut, Format: output.NPY, Strict: true, ToksPerBatch: 64, Window: 64})
	if err == nil || !strings.Contains(err.Error(), "pnnl_JunkTest.fasta:") {
		t.Fatalf("strict run: error %v, want one naming the file and line", err)
	}
	if _, serr := os.Stat(strictOut); !os.IsNotExist(serr) {
		t.Fatal("a failed run published the final output")
	}
	t.Logf("strict: %v", err)
}

func TestEmbedRefusesExistingOutput(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	out := filepath.Join(t.TempDir(), "x.parquet")
	if err := os.WriteFile(out, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: out}); err == nil {
		t.Fatal("existing output overwritten without Overwrite")
	}
	if _, err := Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: out, Overwrite: true}); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
}

func TestEmbedBadLayerAndMissingInput(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	dir := t.TempDir()
	if _, err := Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: filepath.Join(dir, "a"), Layers: []int{9}}); err == nil {
		t.Error("layer 9 of a 3-layer model accepted")
	}
	_, err := Run(context.Background(), m, Options{Inputs: []string{filepath.Join(dir, "missing.fasta")}, Out: filepath.Join(dir, "b")})
	if err == nil || !strings.Contains(err.Error(), "missing.fasta") {
		t.Errorf("missing input: %v", err)
	}
}

// Cancelling commits the rows already written (with the asynchronous fake,
// also the rows of the batches in flight); running again resumes after
// them, and the result equals an uninterrupted run's.
func TestEmbedCancelThenResume(t *testing.T) {
	t.Parallel()
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync", true: "async"}[async], func(t *testing.T) {
			var m *esm.Model
			var ab *esmtest.Async
			if async {
				m, ab = loadTinyAsync(t, nil)
			} else {
				m = loadTiny(t)
			}
			opts := func(out string) Options {
				return Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY, ToksPerBatch: 200, Window: 200,
					Include: esm.Mean | esm.PerTok, Identity: map[string]string{"test": "resume"}}
			}
			ref := filepath.Join(t.TempDir(), "ref")
			if _, err := Run(context.Background(), m, opts(ref)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			out := filepath.Join(t.TempDir(), "c")
			n := 0
			o := opts(out)
			o.Progress = func(s *Summary, final bool) {
				n++
				if n == 3 {
					cancel()
				}
			}
			sum, err := Run(ctx, m, o)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			if _, serr := os.Stat(out); !os.IsNotExist(serr) {
				t.Fatal("cancelled run published the final output")
			}
			if n < 3 || sum.Batches < 3 {
				t.Errorf("%d progress calls, %d batches handed to the writer; want at least 3", n, sum.Batches)
			}
			committed := errors.Is(err, ErrResumable)
			t.Logf("cancelled after %d batches; resumable: %v (%v)", sum.Batches, committed, err)
			if async {
				checkAsync(t, ab, 0)
			}
			sum, err = Run(context.Background(), m, opts(out))
			if err != nil {
				t.Fatal(err)
			}
			if committed != (sum.Resumed > 0) {
				t.Errorf("resumed %d records, committed before: %v", sum.Resumed, committed)
			}
			if sum.Resumed+sum.Embedded != 15 || sum.Records != 15 {
				t.Errorf("resumed %d + embedded %d, records %d; want 15", sum.Resumed, sum.Embedded, sum.Records)
			}
			sameOutput(t, ref, out, m.Cfg.Layers)
		})
	}
}

// sameOutput compares two npy outputs of mean and per_tok at layer L: same
// records, bit-identical values.
func sameOutput(t *testing.T, a, b string, L int) {
	t.Helper()
	ra, rb := readRecords(t, a), readRecords(t, b)
	if !reflect.DeepEqual(ra, rb) {
		t.Fatalf("records differ:\n%v\n%v", ra, rb)
	}
	for _, name := range []string{fmt.Sprintf("mean_%d.npy", L), fmt.Sprintf("per_tok_%d.npy", L)} {
		va, sa := readNPY(t, filepath.Join(a, name))
		vb, sb := readNPY(t, filepath.Join(b, name))
		if sa != sb || !reflect.DeepEqual(va, vb) {
			t.Fatalf("%s differs (shapes %v %v)", name, sa, sb)
		}
	}
}

// oomBackend fails allocations above a size, like a GPU out of memory.
type oomBackend struct {
	*cpu.Backend
	limit int
}

func (b oomBackend) Alloc(n int, wide bool) (esm.Tensor, error) {
	if n > b.limit {
		return nil, fmt.Errorf("fake device: alloc %d: %w", n, esm.ErrOutOfMemory)
	}
	return b.Backend.Alloc(n, wide)
}

// A batch that does not fit is split and retried, never a crash, and the
// results equal an unconstrained run; also with two batches in flight (the
// asynchronous fake), where the batch in flight is finished first.
func TestEmbedSplitsOnOutOfMemory(t *testing.T) {
	t.Parallel()
	ref := loadTiny(t)
	wantMean, _ := direct(t, ref, someFASTA, ref.Cfg.Layers)
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync", true: "async"}[async], func(t *testing.T) {
			base := cpu.New(cpu.Options{})
			// The largest allocation is the (T, 4D) FFN activation (D = 64):
			// allow ~1100 tokens.
			oom := oomBackend{Backend: base, limit: 1100 * 4 * 64}
			var m *esm.Model
			var ab *esmtest.Async
			if async {
				m, ab = loadTinyAsync(t, oom)
			} else {
				var err error
				if m, err = esm.LoadModel(tinyModel, oom); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close(); base.Close() })
			}
			cfg := m.Cfg
			var log logCapture
			out := filepath.Join(t.TempDir(), "oom")
			sum, err := Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY,
				ToksPerBatch: 8192, Log: slog.New(slog.NewTextHandler(&log, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log.String(), "out of device memory") || sum.Embedded != 15 {
				t.Fatalf("no split reported or records lost: %+v\n%s", sum, log.String())
			}
			mean, _ := readNPY(t, filepath.Join(out, fmt.Sprintf("mean_%d.npy", cfg.Layers)))
			D := cfg.Dim
			for i := 0; i < 15; i++ {
				if e := testutil.MaxRel(mean[i*D:(i+1)*D], wantMean[int64(i)]); e > 1e-5 {
					t.Errorf("record %d differs by %g after the split", i, e)
				}
			}
			if async {
				checkAsync(t, ab, sum.Batches)
			}
		})
	}
}

func TestIDHashIsFNV1a(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"", "a", "UniRef50_A0A1E3NP16", "sp|P62593|BLAT_ECOLX"} {
		h := fnv.New64a()
		h.Write([]byte(id))
		if got, want := idHash(id), h.Sum64(); got != want {
			t.Errorf("idHash(%q) = %x, want %x", id, got, want)
		}
	}
}

// TestNoResumeRemovesRows: a run that no later run can resume (NoResume: its
// input is standard input) and is stopped after committing rows removes
// them and says so; the same run without NoResume keeps them.
func TestNoResumeRemovesRows(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	for _, noResume := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		out := filepath.Join(t.TempDir(), "o")
		n := 0
		o := Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY, ToksPerBatch: 200, Window: 200,
			Include: esm.Mean, Identity: map[string]string{"test": "noresume"}, ChunkRows: 1, NoResume: noResume}
		o.Progress = func(s *Summary, final bool) {
			if n++; n == 4 {
				cancel()
			}
		}
		_, err := Run(ctx, m, o)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("NoResume %v: error %v, want context.Canceled", noResume, err)
		}
		_, serr := os.Stat(out + output.PartsSuffix)
		switch {
		case noResume && (serr == nil || errors.Is(err, ErrResumable) || !strings.Contains(err.Error(), "no rows were kept")):
			t.Errorf("NoResume: parts directory %v, error %v; want none, and a message saying so", serr, err)
		case !noResume && (serr != nil || !errors.Is(err, ErrResumable)):
			t.Errorf("resumable run: parts directory %v, error %v; want them kept (ChunkRows 1 commits every row)", serr, err)
		}
	}
}
