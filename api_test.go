package esm2go

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/weights"
)

const tinyModel = "tests/testdata/models/tiny" // 3 layers, D=64, with an LM head

// Tolerance against the HF fixture: the same bound as tests/parity_test.go
// (fp32 against HF's fp32, whose own error against fp64 is <= 1.4e-6; two
// fp32 implementations differ by up to ~3e-6; 2e-5 leaves a 6x margin and
// still catches any real bug, which is >= 1e-3 with these weights).
const hfTol = 2e-5

func loadTiny(t *testing.T, opts Options) *Model {
	t.Helper()
	opts.Resolve.Offline = true
	m, err := Load(t.Context(), tinyModel, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

type hfFixture struct {
	f      *weights.SafetensorsFile
	inputs []Sequence
}

func openHF(t *testing.T) *hfFixture {
	t.Helper()
	f, err := weights.OpenSafetensors(filepath.Join("tests", "testdata", "fixtures", "tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var in []struct{ Name, Sequence string }
	if err := json.Unmarshal([]byte(f.Metadata["inputs"]), &in); err != nil {
		t.Fatal(err)
	}
	fx := &hfFixture{f: f}
	for _, s := range in {
		fx.inputs = append(fx.inputs, Sequence{ID: s.Name, Residues: s.Sequence})
	}
	return fx
}

func (fx *hfFixture) floats(t *testing.T, name string) []float32 {
	t.Helper()
	tn, ok := fx.f.Tensors[name]
	if !ok {
		t.Fatalf("fixture has no tensor %s", name)
	}
	d, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (fx *hfFixture) ints(t *testing.T, name string) []int32 {
	t.Helper()
	d, err := fx.f.Tensors[name].Int32()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func checkRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	if e := testutil.MaxRel(got, want); e > tol {
		t.Errorf("%s: max|diff|/max|ref| = %.3g > %.0e", what, e, tol)
	}
}

// Embed and Logits through the public API match HF transformers on every
// fixture input and layer, with a small token budget so that the inputs are
// packed into several batches with different neighbours.
func TestEmbedAndLogitsMatchHF(t *testing.T) {
	fx := openHF(t)
	m := loadTiny(t, Options{Device: "cpu", TokensPerBatch: 300})
	L, D := m.Info().Layers, m.Info().Dim
	layers := []int{0, 1, -2, -1} // -2 = L-1, -1 = L
	embs, err := m.Embed(t.Context(), fx.inputs, EmbedOptions{Layers: layers, Include: Mean | BOS | PerTok})
	if err != nil {
		t.Fatal(err)
	}
	if len(embs) != len(fx.inputs) {
		t.Fatalf("%d embeddings for %d inputs", len(embs), len(fx.inputs))
	}
	if got, want := embs[0].Layers(), []int{0, 1, L - 1, L}; !slices.Equal(got, want) {
		t.Fatalf("Layers() = %v, want %v", got, want)
	}
	logits, err := m.Logits(t.Context(), fx.inputs, LogitsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range fx.inputs {
		e, lg := embs[i], logits[i]
		toks := fx.ints(t, in.ID+".tokens")
		if e.ID != in.ID || e.Index != i || e.Length != len(toks)-2 || e.Dim != D {
			t.Fatalf("embedding %d: id %q index %d length %d dim %d; want %q %d %d %d", i, e.ID, e.Index, e.Length, e.Dim, in.ID, i, len(toks)-2, D)
		}
		if !slices.Equal(lg.Tokens, toks) {
			t.Fatalf("%s: logits tokens %v, want HF's %v", in.ID, lg.Tokens, toks)
		}
		rows := fx.ints(t, in.ID+".rows") // token rows the fixture keeps
		for k := 0; k <= L; k++ {
			if !slices.Contains([]int{0, 1, L - 1, L}, k) {
				if e.Mean(k) != nil || e.PerResidue(k).Data != nil {
					t.Errorf("%s: layer %d was not requested but is returned", in.ID, k)
				}
				continue
			}
			checkRel(t, fmt.Sprintf("%s mean.%d", in.ID, k), e.Mean(k), fx.floats(t, fmt.Sprintf("%s.mean.%d", in.ID, k)), hfTol)
			checkRel(t, fmt.Sprintf("%s bos.%d", in.ID, k), e.BOS(k), fx.floats(t, fmt.Sprintf("%s.bos.%d", in.ID, k)), hfTol)
			pr := e.PerResidue(k)
			if pr.Rows != e.Length || pr.Cols != D || len(pr.Data) != e.Length*D {
				t.Fatalf("%s: PerResidue(%d) is (%d, %d) with %d values, want (%d, %d)", in.ID, k, pr.Rows, pr.Cols, len(pr.Data), e.Length, D)
			}
			var got, want []float32
			ref := fx.floats(t, fmt.Sprintf("%s.hidden.%d", in.ID, k))
			for j, r := range rows {
				switch {
				case r == 0: // BOS
					got = append(got, e.BOS(k)...)
				case int(r) <= e.Length:
					got = append(got, pr.Row(int(r)-1)...)
				default: // EOS: not a residue
					continue
				}
				want = append(want, ref[j*D:(j+1)*D]...)
			}
			checkRel(t, fmt.Sprintf("%s hidden.%d", in.ID, k), got, want, hfTol)
		}
		if neg, pos := e.Mean(-1), e.Mean(L); &neg[0] != &pos[0] {
			t.Errorf("%s: Mean(-1) and Mean(%d) are different slices", in.ID, L)
		}
		all, res := lg.All(), lg.Residues()
		if all.Rows != e.Length+2 || all.Cols != 33 || res.Rows != e.Length || res.Cols != 33 {
			t.Fatalf("%s: logits All (%d, %d), Residues (%d, %d)", in.ID, all.Rows, all.Cols, res.Rows, res.Cols)
		}
		if !slices.Equal(res.Row(0), all.Row(1)) {
			t.Errorf("%s: Residues().Row(0) is not All().Row(1)", in.ID)
		}
		var got []float32
		for _, r := range rows {
			got = append(got, all.Row(int(r))...)
		}
		checkRel(t, in.ID+" logits", got, fx.floats(t, in.ID+".logits"), hfTol)
	}
}

// EmbedSeq yields the same embeddings as Embed, in input order, whatever
// its window; stopping the range early stops reading the input.
func TestEmbedSeqMatchesEmbed(t *testing.T) {
	fx := openHF(t)
	inputs := fx.inputs[:7] // 1957 residues: 3 windows of 1000 tokens, each of several sequences
	m := loadTiny(t, Options{Device: "cpu"})
	opts := EmbedOptions{Layers: []int{-1, 1}, Include: Mean | PerTok}
	want, err := m.Embed(t.Context(), inputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, window := range []int{1, 1000, 1 << 20} {
		opts.ReadAhead = window
		var i int
		for e, err := range m.EmbedSeq(t.Context(), slices.Values(inputs), opts) {
			if err != nil {
				t.Fatal(err)
			}
			w := want[i]
			if e.ID != w.ID || e.Index != i || e.Length != w.Length {
				t.Fatalf("window %d: result %d is %q (index %d, length %d), want %q (%d, %d)", window, i, e.ID, e.Index, e.Length, w.ID, i, w.Length)
			}
			// Other batch neighbours change only the matmul's blocking:
			// rounding-level differences (measured 0 to ~1e-7).
			checkRel(t, fmt.Sprintf("window %d %s mean", window, e.ID), e.Mean(-1), w.Mean(-1), 1e-6)
			checkRel(t, fmt.Sprintf("window %d %s per-residue", window, e.ID), e.PerResidue(1).Data, w.PerResidue(1).Data, 1e-6)
			i++
		}
		if i != len(inputs) {
			t.Fatalf("window %d: %d results for %d inputs", window, i, len(inputs))
		}
	}

	// Break after the first result: the input is not read further.
	read := 0
	in := func(yield func(Sequence) bool) {
		for _, s := range fx.inputs {
			read++
			if !yield(s) {
				return
			}
		}
	}
	for _, err := range m.EmbedSeq(t.Context(), iter.Seq[Sequence](in), EmbedOptions{ReadAhead: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if read != 1 {
		t.Fatalf("input read %d times after an early break, want 1", read)
	}
}

// Truncation keeps the first MaxResidues residues; MaxResidues < 0 keeps
// all of them.
func TestTruncation(t *testing.T) {
	m := loadTiny(t, Options{})
	seq := strings.Repeat("MKTAYIAKQR", 3)
	embs, err := m.Embed(t.Context(), Sequences(seq, seq[:5]), EmbedOptions{MaxResidues: 5, Include: Mean | PerTok})
	if err != nil {
		t.Fatal(err)
	}
	if e := embs[0]; e.Length != 5 || !e.Truncated || e.PerResidue(-1).Rows != 5 {
		t.Fatalf("truncated: length %d, truncated %v, %d rows", e.Length, e.Truncated, e.PerResidue(-1).Rows)
	}
	if embs[1].Truncated {
		t.Fatal("a sequence of exactly MaxResidues is reported truncated")
	}
	// The first 5 residues alone give the same embedding as the truncated sequence.
	checkRel(t, "truncated vs prefix", embs[0].Mean(-1), embs[1].Mean(-1), 1e-6)
	full, err := m.Embed(t.Context(), Sequences(seq), EmbedOptions{MaxResidues: -1})
	if err != nil {
		t.Fatal(err)
	}
	if full[0].Length != len(seq) || full[0].Truncated {
		t.Fatalf("no truncation: length %d, truncated %v", full[0].Length, full[0].Truncated)
	}
}

// Bad input gets an error naming the sequence, never a panic; a closed
// model and a cancelled context are reported as such.
func TestErrors(t *testing.T) {
	m := loadTiny(t, Options{})
	ctx := t.Context()
	seqs := []Sequence{{ID: "ok", Residues: "MKT"}, {ID: "bad one", Residues: "MK1T"}}
	_, err := m.Embed(ctx, seqs, EmbedOptions{})
	if err == nil || !strings.Contains(err.Error(), `sequence 1 (id "bad one")`) || !strings.Contains(err.Error(), "residue 3") {
		t.Errorf("invalid residue: %v", err)
	}
	if _, err := m.Logits(ctx, []Sequence{{ID: "empty"}}, LogitsOptions{}); err == nil || !strings.Contains(err.Error(), `"empty"`) {
		t.Errorf("empty sequence: %v", err)
	}
	for _, e := range m.EmbedSeq(ctx, slices.Values(seqs), EmbedOptions{}) {
		if e == nil || !strings.Contains(e.Error(), `"bad one"`) {
			t.Errorf("EmbedSeq of an invalid residue: %v", e)
		}
	}
	if _, err := m.Embed(ctx, Sequences("MKT"), EmbedOptions{Layers: []int{4}}); err == nil || !strings.Contains(err.Error(), "layer 4 out of range") {
		t.Errorf("layer 4 of 3: %v", err)
	}
	if _, err := m.Embed(ctx, Sequences("MKT"), EmbedOptions{Include: 1 << 6}); err == nil {
		t.Error("unknown Include bits accepted")
	}
	long := strings.Repeat("A", 1<<17) // 131074 tokens: more than the CPU's MaxCPUSequenceTokens
	if _, err := m.Embed(ctx, []Sequence{{ID: "titin+", Residues: long}}, EmbedOptions{MaxResidues: -1}); err == nil ||
		!strings.Contains(err.Error(), `(id "titin+") has 131074 tokens; cpu embeds at most 131072`) {
		t.Errorf("an untruncated sequence over the device's limit: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Embed(cancelled, Sequences("MKT"), EmbedOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}

	for _, c := range []struct{ dev, prec, want string }{
		{"gpu", "", `device "gpu"`},
		{"cuda:x", "", `device "cuda:x"`},
		{"cpu", "fp16", "CPU computes in fp32"},
		{"cuda:0", "fp8", "fp8"},
	} {
		if _, err := Load(ctx, tinyModel, Options{Device: c.dev, Precision: Precision(c.prec)}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load on %q %q: %v, want an error with %q", c.dev, c.prec, err, c.want)
		}
	}
	if _, err := Load(ctx, filepath.Join(t.TempDir(), "missing"), Options{Resolve: weights.ResolveOptions{Offline: true}}); err == nil {
		t.Error("a missing model loaded")
	}

	m2, err := Load(ctx, tinyModel, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m2.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := m2.Embed(ctx, Sequences("MKT"), EmbedOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Embed after Close: %v", err)
	}
	// Closed comes before the arguments' own errors.
	if _, err := m2.Embed(ctx, Sequences(""), EmbedOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Embed of an empty sequence after Close: %v", err)
	}
	if _, err := m2.Logits(ctx, Sequences("M1"), LogitsOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Logits after Close: %v", err)
	}
	for _, err := range m2.EmbedSeq(ctx, slices.Values(Sequences("")), EmbedOptions{}) {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("EmbedSeq after Close: %v", err)
		}
	}
}

// Concurrent calls on one Model are served one at a time and each gets its
// own results.
func TestConcurrentCalls(t *testing.T) {
	m := loadTiny(t, Options{Threads: 1})
	seqs := [][]Sequence{Sequences("MKTAYIAKQR"), Sequences("GGGGSSSSLLLLAAAA", "MK")}
	want := make([][]Embedding, len(seqs))
	for i, s := range seqs {
		var err error
		if want[i], err = m.Embed(t.Context(), s, EmbedOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for n := 0; n < 5; n++ {
				i := (g + n) % len(seqs)
				got, err := m.Embed(t.Context(), seqs[i], EmbedOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				for j := range got {
					if !slices.Equal(got[j].Mean(-1), want[i][j].Mean(-1)) {
						t.Errorf("goroutine %d call %d: result %d differs", g, n, j)
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestAlphabet(t *testing.T) {
	a := Alphabet()
	if a[0] != "<cls>" || a[2] != "<eos>" || a[32] != "<mask>" || a[5] != "A" {
		t.Fatalf("alphabet %v", a)
	}
	if TokenID("A") != 5 || TokenID("<mask>") != 32 || TokenID("J") != -1 {
		t.Fatalf("TokenID: A=%d <mask>=%d J=%d", TokenID("A"), TokenID("<mask>"), TokenID("J"))
	}
}

// Load takes a hub id: a model missing from the caches is downloaded (here
// from a local server that speaks the hub's protocol and serves the tiny
// model), put in the HF cache layout and loaded; a second Load finds it in
// the cache with the server gone.
func TestLoadByID(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	hub, _ := testutil.FakeHub(t, "test-org/esm2_tiny", commit, tinyModel)
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	cache := t.TempDir()
	res := weights.ResolveOptions{CacheDir: cache, TorchHubDir: t.TempDir(), Endpoint: hub.URL}
	embed := func() []float32 {
		m, err := Load(t.Context(), "test-org/esm2_tiny", Options{Resolve: res})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if want := filepath.Join(cache, "models--test-org--esm2_tiny", "snapshots", commit); m.Info().Path != want {
			t.Fatalf("loaded %s, want the cache snapshot %s", m.Info().Path, want)
		}
		embs, err := m.Embed(t.Context(), Sequences("MKTAYIAKQR"), EmbedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return embs[0].Mean(-1)
	}
	first := embed()
	hub.Close() // the second Load must not need the network
	if !slices.Equal(embed(), first) {
		t.Fatal("the cached model gives other embeddings")
	}
}

// oomBackend is the CPU backend with a device memory of maxFloats floats
// per allocation: larger activation buffers fail with esm.ErrOutOfMemory,
// as a GPU's do.
type oomBackend struct {
	esm.Backend
	maxFloats int
	fails     int
}

func (b *oomBackend) Alloc(n int, wide bool) (esm.Tensor, error) {
	if n > b.maxFloats {
		b.fails++
		return nil, fmt.Errorf("alloc of %d floats: %w", n, esm.ErrOutOfMemory)
	}
	return b.Backend.Alloc(n, wide)
}

// A batch that does not fit in device memory is cut in half until it does,
// the budget stays lowered, and the results are those of a device with
// enough memory; a single sequence that does not fit is an error naming it.
func TestOutOfMemorySplits(t *testing.T) {
	var seqs []Sequence
	for i := range 12 {
		seqs = append(seqs, Sequence{ID: fmt.Sprint("s", i), Residues: strings.Repeat("MKTAYIAKQR", 2+i%5)})
	}
	m := loadTiny(t, Options{})
	want, err := m.Embed(t.Context(), seqs, EmbedOptions{Include: Mean | PerTok})
	if err != nil {
		t.Fatal(err)
	}
	// The largest activation is the FFN's (T, 4D): at D=64 this allows 130 tokens.
	be := &oomBackend{Backend: cpu.New(cpu.Options{Threads: 1}), maxFloats: 130 * 256}
	small := loadTiny(t, Options{TokensPerBatch: 1000, newBackend: func() (esm.Backend, error) { return be, nil }})
	got, err := small.Embed(t.Context(), seqs, EmbedOptions{Include: Mean | PerTok})
	if err != nil {
		t.Fatal(err)
	}
	if be.fails == 0 {
		t.Fatal("no allocation failed: the test does not test splitting")
	}
	for i := range want {
		// Other batch neighbours change only the matmul's blocking.
		checkRel(t, seqs[i].ID+" mean", got[i].Mean(-1), want[i].Mean(-1), 1e-6)
		checkRel(t, seqs[i].ID+" per-residue", got[i].PerResidue(-1).Data, want[i].PerResidue(-1).Data, 1e-6)
	}
	fails := be.fails
	if _, err := small.Embed(t.Context(), seqs, EmbedOptions{}); err != nil {
		t.Fatal(err)
	}
	if be.fails != fails {
		t.Errorf("the lowered budget was forgotten: %d more failed allocations", be.fails-fails)
	}
	_, err = small.Embed(t.Context(), []Sequence{{ID: "long", Residues: strings.Repeat("A", 200)}}, EmbedOptions{})
	if !errors.Is(err, esm.ErrOutOfMemory) || !strings.Contains(err.Error(), `(id "long")`) {
		t.Errorf("a sequence larger than the device: %v", err)
	}
}

// nanModel copies the tiny model with one element of the final layer
// norm's weight set to 3e38, finite (the loader refuses NaN and Inf
// weights) but so large that the normalized activations it scales
// overflow to ±Inf, as an fp16 overflow does: the last layer's embeddings
// and the logits are then not finite.
func nanModel(t *testing.T) string {
	t.Helper()
	src := testutil.TinyModelDir()
	dst := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(st[:8])
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(st[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	var info struct {
		DType   string  `json:"dtype"`
		Offsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr["esm.encoder.emb_layer_norm_after.weight"], &info); err != nil || info.DType != "F32" {
		t.Fatalf("tiny model: %s %v", info.DType, err)
	}
	binary.LittleEndian.PutUint32(st[8+int64(n)+info.Offsets[0]:], math.Float32bits(3e38))
	if err := os.WriteFile(filepath.Join(dst, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "model.safetensors"), st, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestNonFiniteIsAnError: a model that computes NaN makes Embed, EmbedSeq
// and Logits fail with ErrNonFinite naming the sequence; no NaN reaches
// the caller as a result.
func TestNonFiniteIsAnError(t *testing.T) {
	ctx := context.Background()
	m, err := Load(ctx, nanModel(t), Options{Device: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	seqs := Sequences("MKTAYIAK", "GGSW")
	if res, err := m.Embed(ctx, seqs, EmbedOptions{}); !errors.Is(err, ErrNonFinite) || res != nil || !strings.Contains(err.Error(), "sequence ") {
		t.Errorf("Embed: %v, %v", res, err)
	}
	for e, err := range m.EmbedSeq(ctx, slices.Values(seqs), EmbedOptions{}) {
		if !errors.Is(err, ErrNonFinite) {
			t.Errorf("EmbedSeq: %+v, %v", e, err)
		}
	}
	if res, err := m.Logits(ctx, seqs, LogitsOptions{}); !errors.Is(err, ErrNonFinite) || res != nil {
		t.Errorf("Logits: %v, %v", res, err)
	}
}

// TestZeroValuesAndPrecisionCase: a zero Logits gives empty matrices (its
// Residues panicked), and Precision is read case-insensitively as Device is
// ("FP32" on the CPU was refused as "for the GPU").
func TestZeroValuesAndPrecisionCase(t *testing.T) {
	t.Parallel()
	var l Logits
	if a, r := l.All(), l.Residues(); a.Rows != 0 || a.Data != nil || r.Rows != 0 || r.Data != nil {
		t.Errorf("zero Logits: All %+v, Residues %+v", a, r)
	}
	m, err := Load(context.Background(), "tests/testdata/models/tiny", Options{Device: "cpu", Precision: "FP32"})
	if err != nil {
		t.Fatalf("Precision FP32 on the CPU: %v", err)
	}
	m.Close()
	if _, err := Load(context.Background(), "tests/testdata/models/tiny", Options{Device: "cpu", Precision: "fp8"}); err == nil {
		t.Error("Precision fp8: no error")
	}
}
