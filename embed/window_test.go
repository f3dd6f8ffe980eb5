package embed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/output"
)

// Windows cover the record, are each exactly Size residues long, start in
// increasing order, share at least Overlap residues with the one before,
// and are as few as that allows.
func TestWindowSpans(t *testing.T) {
	t.Parallel()
	for _, w := range []Windowing{{10, 0}, {10, 3}, {10, 9}, {1022, 256}, {1, 0}, {7, 6}} {
		step := max(1, w.Size/50) // every length around small windows, a sample around 1022
		for n := 1; n <= 4*w.Size+13; n += step {
			k := w.Count(n)
			if n <= w.Size {
				if k != 1 {
					t.Fatalf("%+v n=%d: %d windows, want 1", w, n, k)
				}
				if s, e := w.Span(0, 1, n); s != 0 || e != n {
					t.Fatalf("%+v n=%d: span [%d,%d)", w, n, s, e)
				}
				continue
			}
			covered := make([]int, n)
			prevS, prevE := -1, 0
			for i := range k {
				s, e := w.Span(i, k, n)
				if e-s != w.Size || s <= prevS || s < 0 || e > n {
					t.Fatalf("%+v n=%d: window %d/%d is [%d,%d) after [%d,%d)", w, n, i, k, s, e, prevS, prevE)
				}
				if i > 0 && prevE-s < w.Overlap {
					t.Fatalf("%+v n=%d: windows %d and %d share %d residues, want >= %d", w, n, i-1, i, prevE-s, w.Overlap)
				}
				for r := s; r < e; r++ {
					covered[r]++
				}
				prevS, prevE = s, e
			}
			if s, _ := w.Span(0, k, n); s != 0 || prevE != n {
				t.Fatalf("%+v n=%d: windows span [%d,%d)", w, n, s, prevE)
			}
			for r, c := range covered {
				if c == 0 {
					t.Fatalf("%+v n=%d: residue %d in no window", w, n, r)
				}
			}
			// One window fewer cannot cover n with this stride.
			if stride := w.Size - w.Overlap; (k-2)*stride+w.Size >= n {
				t.Fatalf("%+v n=%d: %d windows where %d would do", w, n, k, k-1)
			}
		}
	}
	for _, bad := range []Windowing{{0, 1}, {-1, 0}, {10, 10}, {10, -1}, {10, 11}, {MaxWindowedResidues + 1, 0}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// Windows and truncation are exclusive; a bad policy is refused before
// anything runs.
func TestWindowOptionsRefused(t *testing.T) {
	t.Parallel()
	m := loadTiny(t)
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Windowing: Windowing{100, 20}, MaxResidues: 500}, "exclusive"},
		{Options{Windowing: Windowing{100, 100}}, "overlap"},
		{Options{Windowing: Windowing{0, 5}}, "want > 0"},
	} {
		c.o.Inputs, c.o.Out = []string{someFASTA}, filepath.Join(t.TempDir(), "x.parquet")
		_, err := Run(context.Background(), m, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o.Windowing, err, c.want)
		}
		if _, serr := os.Stat(c.o.Out); !os.IsNotExist(serr) {
			t.Errorf("%+v: an output was written", c.o.Windowing)
		}
	}
}

// loadTiny1 loads the tiny model on a one-thread CPU backend: results are
// then bit-identical for the same sequences in the same batches.
func loadTiny1(t testing.TB) *esm.Model {
	t.Helper()
	be := cpu.New(cpu.Options{Threads: 1})
	m, err := esm.LoadModel(tinyModel, be)
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); be.Close() })
	return m
}

// A protein no longer than a window gives exactly the plain result: with
// every record of the input (at most 935 residues) under the window, a
// windowed run writes the same bytes as a run without windows.
func TestWindowShortRecordsEqualPlain(t *testing.T) {
	t.Parallel()
	m := loadTiny1(t)
	run := func(w Windowing) string {
		out := filepath.Join(t.TempDir(), "emb")
		sum, err := Run(context.Background(), m, Options{Inputs: []string{someFASTA}, Out: out, Format: output.NPY,
			Include: esm.Mean | esm.BOS | esm.PerTok, Layers: []int{-1, 1}, ToksPerBatch: 4096, Windowing: w})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Embedded != 15 || sum.Windowed != 0 || sum.Truncated != 0 {
			t.Fatalf("summary %+v", sum)
		}
		return out
	}
	plain := run(Windowing{})
	for _, w := range []Windowing{{935, 0}} { // the longest record is exactly one window
		got := run(w)
		sameOutput(t, plain, got, m.Cfg.Layers)
		for _, name := range []string{"bos_3.npy", "mean_1.npy", "per_tok_1.npy"} {
			a, _ := readNPY(t, filepath.Join(plain, name))
			b, _ := readNPY(t, filepath.Join(got, name))
			if !reflect.DeepEqual(a, b) {
				t.Errorf("window %+v: %s differs from the plain run", w, name)
			}
		}
	}
}

// longFASTA writes short records around long ones (residues drawn from the
// 20 standard amino acids with a fixed seed) and returns its path and
// sequences.
func longFASTA(t *testing.T, lens []int) (string, []string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	const aa = "ACDEFGHIKLMNPQRSTVWY"
	var b strings.Builder
	var seqs []string
	for i, n := range lens {
		s := make([]byte, n)
		for j := range s {
			s[j] = aa[rng.IntN(len(aa))]
		}
		if i == 1 && n > 40 {
			copy(s[30:], "<mask>") // a literal mask inside a window
		}
		fmt.Fprintf(&b, ">rec%d\n%s\n", i, s)
		seqs = append(seqs, string(s))
	}
	path := filepath.Join(t.TempDir(), "long.fasta")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, seqs
}

// handWindows embeds each window of seq alone with the bare forward pass
// and combines them by the documented rule: each residue's row is the
// average (float64 sum in window order / count) of its rows in the windows
// holding it; mean = float64 mean of those rows; bos = average of the
// windows' <cls> rows.
func handWindows(t *testing.T, m *esm.Model, seq string, w Windowing, layer int) (mean, bos, perTok []float32) {
	t.Helper()
	tok := esm.NewTokenizer(-1)
	all, _, err := tok.Encode(nil, []byte(seq))
	if err != nil {
		t.Fatal(err)
	}
	res := all[1 : len(all)-1]
	L, D := len(res), m.Cfg.Dim
	k := w.Count(L)
	sum := make([]float64, L*D)
	cnt := make([]int, L)
	bsum := make([]float64, D)
	var b esm.Batch
	var out esm.Output
	defer out.Release()
	for i := range k {
		s, e := w.Span(i, k, L)
		win := append(append([]int32{esm.TokCLS}, res[s:e]...), esm.TokEOS)
		masks := 0
		for _, x := range res[s:e] {
			if x == esm.TokMask {
				masks++
			}
		}
		b.Reset()
		b.Append(win, masks)
		if err := m.Forward(&b, esm.Request{Layers: []int{layer}, Reprs: esm.BOS | esm.PerTok}, &out); err != nil {
			t.Fatal(err)
		}
		x := out.PerTok[layer]
		for r := s; r < e; r++ {
			for d := range D {
				sum[r*D+d] += float64(x[(r-s+1)*D+d])
			}
			cnt[r]++
		}
		for d := range D {
			bsum[d] += float64(out.BOS[layer][d])
		}
	}
	perTok = make([]float32, L*D)
	msum := make([]float64, D)
	for r := range L {
		for d := range D {
			perTok[r*D+d] = float32(sum[r*D+d] / float64(cnt[r]))
			msum[d] += float64(perTok[r*D+d])
		}
	}
	mean, bos = make([]float32, D), make([]float32, D)
	for d := range D {
		mean[d] = float32(msum[d] / float64(L))
		bos[d] = float32(bsum[d] / float64(k))
	}
	return mean, bos, perTok
}

// windowOpts embeds path with windows into an npy directory.
func windowOpts(path, out string, w Windowing, toks int) Options {
	return Options{Inputs: []string{path}, Out: out, Format: output.NPY, Include: esm.Mean | esm.BOS | esm.PerTok,
		ToksPerBatch: toks, Windowing: w}
}

// A long synthetic protein on the tiny model: the windowed rows equal a
// hand-computed average of separately embedded windows. With a budget of
// one window per batch every window is computed exactly as alone
// (bit-identical on the one-thread CPU); packed with other sequences the
// values differ only by fp32 blocking (~1e-6 relative, see
// TestEmbedEqualsDirectForward), bound 1e-5.
func TestWindowLongEqualsHandAverage(t *testing.T) {
	t.Parallel()
	m := loadTiny1(t)
	L, D := m.Cfg.Layers, m.Cfg.Dim
	w := Windowing{Size: 100, Overlap: 30}
	lens := []int{50, 333, 20, 100, 101, 270}
	path, seqs := longFASTA(t, lens)
	lens[1] -= len("<mask>") - 1 // its literal <mask> is one residue
	for _, c := range []struct {
		toks  int
		exact bool
	}{{w.Size + 2, true}, {4096, false}} {
		t.Run(fmt.Sprint("toks ", c.toks), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "emb")
			sum, err := Run(context.Background(), m, windowOpts(path, out, w, c.toks))
			if err != nil {
				t.Fatal(err)
			}
			if sum.Embedded != int64(len(lens)) || sum.Windowed != 3 || sum.Truncated != 0 {
				t.Fatalf("summary %+v", sum)
			}
			recs := readRecords(t, out)
			mean, _ := readNPY(t, filepath.Join(out, fmt.Sprintf("mean_%d.npy", L)))
			bos, _ := readNPY(t, filepath.Join(out, fmt.Sprintf("bos_%d.npy", L)))
			tok, tshape := readNPY(t, filepath.Join(out, fmt.Sprintf("per_tok_%d.npy", L)))
			off := 0
			for i, r := range recs {
				if r.index != int64(i) || r.length != lens[i] || r.truncated {
					t.Fatalf("record %d: %+v, want index %d length %d", i, r, i, lens[i])
				}
				wm, wb, wt := handWindows(t, m, seqs[i], w, L)
				gm, gb, gt := mean[i*D:(i+1)*D], bos[i*D:(i+1)*D], tok[off:off+lens[i]*D]
				off += lens[i] * D
				if c.exact {
					if !reflect.DeepEqual(gm, wm) || !reflect.DeepEqual(gb, wb) || !reflect.DeepEqual(gt, wt) {
						t.Errorf("record %d (%d residues, %d windows): not bit-identical to the hand average (mean %g, bos %g, per_tok %g)",
							i, lens[i], w.Count(lens[i]), testutil.MaxRel(gm, wm), testutil.MaxRel(gb, wb), testutil.MaxRel(gt, wt))
					}
					continue
				}
				for name, e := range map[string]float64{"mean": testutil.MaxRel(gm, wm), "bos": testutil.MaxRel(gb, wb), "per_tok": testutil.MaxRel(gt, wt)} {
					if e > 1e-5 {
						t.Errorf("record %d %s differs from the hand average by %g", i, name, e)
					}
				}
			}
			if off != tshape[0]*D {
				t.Fatalf("per_tok has %d rows, records hold %d", tshape[0], off/D)
			}
		})
	}
}

// The windows of one record spread over two devices (one window per
// batch, several batches in flight): the result is bit-identical to one
// device's, in input order.
func TestWindowTwoDevices(t *testing.T) {
	t.Parallel()
	m := loadTiny1(t)
	w := Windowing{Size: 40, Overlap: 10}
	path, _ := longFASTA(t, []int{200, 10, 150, 41, 120})
	ref := filepath.Join(t.TempDir(), "one")
	if _, err := Run(context.Background(), m, windowOpts(path, ref, w, w.Size+2)); err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	out := filepath.Join(t.TempDir(), "two")
	sum, err := RunDevices(context.Background(), m.Cfg, []Device{cpuDevice("a", -1, &opened, nil, nil), cpuDevice("b", -1, &opened, nil, nil)},
		windowOpts(path, out, w, w.Size+2))
	if err != nil {
		t.Fatal(err)
	}
	sameOutput(t, ref, out, m.Cfg.Layers)
	a, _ := readNPY(t, filepath.Join(ref, "bos_3.npy"))
	b, _ := readNPY(t, filepath.Join(out, "bos_3.npy"))
	if !reflect.DeepEqual(a, b) {
		t.Error("bos differs between one and two devices")
	}
	if sum.Windowed != 4 {
		t.Errorf("%d records windowed, want 4", sum.Windowed)
	}
	t.Logf("batches per device: %d, %d", sum.Devices[0].Batches, sum.Devices[1].Batches)
}

// A windowed run that fails part-way resumes with the same windows and
// ends equal to an uninterrupted run; other windows do not resume it.
func TestWindowResume(t *testing.T) {
	t.Parallel()
	m := loadTiny1(t)
	w := Windowing{Size: 60, Overlap: 20}
	path, _ := longFASTA(t, []int{30, 200, 40, 333, 12, 90, 61, 20, 150, 25})
	opts := func(out string, w Windowing) Options {
		o := windowOpts(path, out, w, 150)
		o.Window = 150 // several bucketing windows, so a resume point falls inside the input
		o.Identity = map[string]string{"test": "window resume"}
		return o
	}
	ref := filepath.Join(t.TempDir(), "ref")
	if _, err := Run(context.Background(), m, opts(ref, w)); err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	out := filepath.Join(t.TempDir(), "emb")
	failed := make(chan struct{})
	_, err := RunDevices(context.Background(), m.Cfg, []Device{cpuDevice("bad", 6, &opened, failed, nil)}, opts(out, w))
	if !errors.Is(err, errDeviceLost) || !errors.Is(err, ErrResumable) {
		t.Fatalf("error %v, want a lost device with committed rows", err)
	}
	// Other windows: the committed rows are refused, not reused.
	if _, err := Run(context.Background(), m, opts(out, Windowing{Size: 60, Overlap: 10})); err == nil || !strings.Contains(err.Error(), MetaWindowOverlap) {
		t.Fatalf("a run with another overlap on the same output: error %v, want the overlap named", err)
	}
	sum, err := Run(context.Background(), m, opts(out, w))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resumed == 0 || sum.Resumed+sum.Embedded != 10 {
		t.Fatalf("resumed %d, embedded %d; want a resume of 10 records", sum.Resumed, sum.Embedded)
	}
	sameOutput(t, ref, out, m.Cfg.Layers)
	rd, err := output.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if meta := rd.Schema().Metadata; meta[MetaWindow] != "60" || meta[MetaWindowOverlap] != "20" {
		t.Errorf("metadata %v lacks the windows", meta)
	}
}

// A record longer than MaxWindowedResidues is skipped with its reason (an
// error with Strict); the records around it are embedded.
func TestWindowTooLongSkipped(t *testing.T) {
	t.Parallel()
	m := loadTiny1(t)
	path := filepath.Join(t.TempDir(), "huge.fasta")
	huge := strings.Repeat("ACDEFGHIKL", MaxWindowedResidues/10+1)
	if err := os.WriteFile(path, []byte(">a\nMKV\n>huge\n"+huge+"\n>b\nMKVL\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := Windowing{Size: 1022, Overlap: 256}
	out := filepath.Join(t.TempDir(), "emb")
	var logs strings.Builder
	o := windowOpts(path, out, w, 0)
	o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	sum, err := Run(context.Background(), m, o)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Embedded != 2 || sum.Skipped != 1 || !strings.Contains(logs.String(), "a record embedded in windows may have") {
		t.Fatalf("summary %+v, log %s", sum, logs.String())
	}
	o = windowOpts(path, filepath.Join(t.TempDir(), "strict"), w, 0)
	o.Strict = true
	if _, err := Run(context.Background(), m, o); err == nil || !strings.Contains(err.Error(), "huge") {
		t.Fatalf("strict: error %v, want the record named", err)
	}
}
