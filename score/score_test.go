package score

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/testutil"
)

// Two wild types: the first residues of two records of
// tests/testdata/fairesm_some_proteins.fasta (UniRef50_UPI0003108055,
// UniRef50_A0A223SCH7), short so that PLL references stay fast.
const (
	wt0 = "MPADAREYLESKHATRRFDRPAEVAGVVAF"
	wt1 = "MGPPRWWKGITGLAAVVHRADPED"
)

// Tolerance of the batched scores against the unbatched Go reference, in
// nats, absolute. Both run the same CPU kernels in fp32; packing changes
// which rows share a matmul call, so the summation order inside the GEMMs,
// and logits move by a few fp32 ulps. The tiny model's weights are random:
// its log-probabilities reach |52| (ulp 3.8e-6), so one log-probability
// moves by up to ~1.5e-5 (4 ulps). A marginal sums 2 per substitution (3 at
// most here: 9e-5, tolerance 2e-4); a PLL sums L = 30 (4.5e-4, tolerance
// 1e-3, i.e. 2e-6 of |PLL| ~ 500). Measured: 8.8e-6 (marginals) and 1.2e-4
// (PLL); a batch of one copy gives exactly the reference. A real bug (a
// wrong row, a mask missing, a wrong token-dropout scale) moves scores by
// more than 1e-2.
const (
	tolMarginal = 2e-4
	tolPLL      = 1e-3
)

func mustMutant(t *testing.T, s string) Mutant {
	t.Helper()
	m, err := ParseMutant(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// refLogProbs is the straightforward reference: one forward pass of one
// sequence (seq with residue pos replaced by <mask>; pos 0: none), the
// log-softmax of every row, (L+2, V).
func refLogProbs(t *testing.T, m *esm.Model, seq string, pos int) [][]float64 {
	t.Helper()
	toks, _, err := esm.NewTokenizer(0).Encode(nil, []byte(seq))
	if err != nil {
		t.Fatal(err)
	}
	masks := 0
	if pos > 0 {
		toks[pos] = esm.TokMask
		masks = 1
	}
	var b esm.Batch
	b.Append(toks, masks)
	var out esm.Output
	defer out.Release()
	if err := m.Forward(&b, esm.Request{Logits: true}, &out); err != nil {
		t.Fatal(err)
	}
	V := m.Cfg.Vocab
	rows := make([][]float64, len(toks))
	for i := range rows {
		rows[i] = make([]float64, V)
		if !logSoftmax(rows[i], out.Logits[i*V:(i+1)*V]) {
			t.Fatalf("row %d: non-finite logits", i)
		}
	}
	return rows
}

// reference memoizes refLogProbs by sequence and masked position, so that
// the wild type's copies are computed once per test.
type reference struct {
	t    *testing.T
	m    *esm.Model
	rows map[string][][]float64
}

func newReference(t *testing.T, m *esm.Model) *reference {
	return &reference{t: t, m: m, rows: map[string][][]float64{}}
}

func (r *reference) logProbs(seq string, pos int) [][]float64 {
	k := fmt.Sprint(seq, "/", pos)
	if v, ok := r.rows[k]; ok {
		return v
	}
	v := refLogProbs(r.t, r.m, seq, pos)
	r.rows[k] = v
	return v
}

// scores computes a variant's scores with the reference, formula by
// formula: one masked forward per substitution, one unmasked, and an
// L-pass PLL of the mutant and of the wild type.
func (r *reference) scores(wt string, mut Mutant) Result {
	var res Result
	unmasked := r.logProbs(wt, 0)
	for _, s := range mut {
		masked := r.logProbs(wt, s.Pos)
		res.MaskedMarginals += masked[s.Pos][tokenOf(s.MT)] - masked[s.Pos][tokenOf(s.WT)]
		res.WTMarginals += unmasked[s.Pos][tokenOf(s.MT)] - unmasked[s.Pos][tokenOf(s.WT)]
	}
	pll := func(seq string) float64 {
		var sum float64
		for i := 1; i <= len(seq); i++ {
			sum += r.logProbs(seq, i)[i][tokenOf(seq[i-1])]
		}
		return sum
	}
	res.PLLMutant = pll(mut.Apply(wt))
	res.PLL = res.PLLMutant - pll(wt)
	return res
}

func checkResult(t *testing.T, what string, got, want Result, strat Strategy) float64 {
	t.Helper()
	var worst float64
	for _, c := range []struct {
		s         Strategy
		name      string
		got, want float64
		tol       float64
	}{
		{MaskedMarginals, "masked_marginals", got.MaskedMarginals, want.MaskedMarginals, tolMarginal},
		{WTMarginals, "wt_marginals", got.WTMarginals, want.WTMarginals, tolMarginal},
		{PLL, "pll", got.PLL, want.PLL, tolPLL},
		{PLL, "pll_mutant", got.PLLMutant, want.PLLMutant, tolPLL},
	} {
		if !strat.Has(c.s) {
			if !math.IsNaN(c.got) {
				t.Errorf("%s: %s = %g, want NaN (not asked for)", what, c.name, c.got)
			}
			continue
		}
		d := math.Abs(c.got - c.want)
		worst = math.Max(worst, d)
		if !(d <= c.tol) {
			t.Errorf("%s: %s = %.7g, reference %.7g (|diff| %.3g > %.0e)", what, c.name, c.got, c.want, d, c.tol)
		}
	}
	return worst
}

// TestScoreMatchesUnbatchedReference: the packed, pipelined path gives what
// one forward pass per copy gives, for singles, doubles (in and out of
// position order), a synonymous substitution, the first and last residue,
// two wild types, and budgets from 1 copy per batch to all of them.
func TestScoreMatchesUnbatchedReference(t *testing.T) {
	t.Parallel()
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	wts := []string{wt0, wt1}
	specs := []struct {
		w   int
		mut string
	}{
		{0, "M1A"}, {0, "F30W"}, {0, "E10K"}, {0, "A5G:R6K"}, {0, "R17P:H13Y:E23C"},
		{0, "A5A"}, {1, "G2V"}, {1, "D24E"}, {1, "W6F:W7Y"}, {1, "G2V"},
	}
	vars := make([]Variant, len(specs))
	want := make([]Result, len(specs))
	ref := newReference(t, m)
	for i, s := range specs {
		vars[i] = Variant{WildType: s.w, Mutant: mustMutant(t, s.mut)}
		want[i] = ref.scores(wts[s.w], vars[i].Mutant)
	}
	if want[5].MaskedMarginals != 0 || want[5].PLL != 0 {
		t.Fatalf("reference: a synonymous substitution scores %+v, want 0", want[5])
	}
	for _, toks := range []int{len(wt0) + 2, 100, 4096} {
		sc, err := New(m, Options{ToksPerBatch: toks, MaxResidues: 40})
		if err != nil {
			t.Fatal(err)
		}
		got, err := sc.Score(context.Background(), wts, vars, AllStrategies)
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		for i := range vars {
			worst = math.Max(worst, checkResult(t, specs[i].mut, got[i], want[i], AllStrategies))
		}
		t.Logf("toks-per-batch %d: max |batched - unbatched| = %.3g nats", toks, worst)
		if got[5].MaskedMarginals != 0 || got[5].WTMarginals != 0 || got[5].PLL != 0 {
			t.Errorf("synonymous A5A scores %+v, want exactly 0", got[5])
		}
		if got[6] != got[9] {
			t.Errorf("the same mutant twice scores %+v and %+v", got[6], got[9])
		}
		if err := sc.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScoreStrategySubset: only the strategies asked for are computed
// (the others NaN), with the same values as all together.
func TestScoreStrategySubset(t *testing.T) {
	t.Parallel()
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	sc, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	vars := []Variant{{0, mustMutant(t, "E10K")}, {0, mustMutant(t, "A5G:R6K")}}
	all, err := sc.Score(context.Background(), []string{wt0}, vars, MaskedMarginals|WTMarginals)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []Strategy{MaskedMarginals, WTMarginals} {
		got, err := sc.Score(context.Background(), []string{wt0}, vars, st)
		if err != nil {
			t.Fatal(err)
		}
		for i := range vars {
			if !math.IsNaN(got[i].PLL) || !math.IsNaN(got[i].PLLMutant) {
				t.Errorf("%v: PLL computed though not asked for: %+v", st, got[i])
			}
			if st == MaskedMarginals && (got[i].MaskedMarginals != all[i].MaskedMarginals || !math.IsNaN(got[i].WTMarginals)) {
				t.Errorf("masked-marginals alone: %+v, together %+v", got[i], all[i])
			}
			if st == WTMarginals && (got[i].WTMarginals != all[i].WTMarginals || !math.IsNaN(got[i].MaskedMarginals)) {
				t.Errorf("wt-marginals alone: %+v, together %+v", got[i], all[i])
			}
		}
	}
}

// TestScanIsOneMaskedPass: a full scan of L positions runs exactly L masked
// copies and one unmasked copy, packed several per batch; the wild-type
// letter scores 0 at every position; the values equal single-variant
// scoring.
func TestScanIsOneMaskedPass(t *testing.T) {
	t.Parallel()
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	var batches = map[Strategy]int{}
	var totals = map[Strategy]int64{}
	var done = map[Strategy]int64{}
	sc, err := New(m, Options{ToksPerBatch: 200, Progress: func(p Strategy, d, total int64) {
		batches[p]++
		totals[p], done[p] = total, d
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	muts := ScanMutants(wt1)
	if len(muts) != 20*len(wt1) {
		t.Fatalf("%d scan mutants, want %d", len(muts), 20*len(wt1))
	}
	vars := make([]Variant, len(muts))
	for i, mu := range muts {
		vars[i] = Variant{0, mu}
	}
	got, err := sc.Score(context.Background(), []string{wt1}, vars, MaskedMarginals|WTMarginals)
	if err != nil {
		t.Fatal(err)
	}
	L := int64(len(wt1))
	if totals[MaskedMarginals] != L || done[MaskedMarginals] != L || totals[WTMarginals] != 1 {
		t.Errorf("copies: masked %d of %d, unmasked %d; want %d masked, 1 unmasked", done[MaskedMarginals], totals[MaskedMarginals], totals[WTMarginals], L)
	}
	perBatch := 200 / (len(wt1) + 2)
	if want := (len(wt1) + perBatch - 1) / perBatch; batches[MaskedMarginals] != want {
		t.Errorf("masked pass in %d batches, want %d (%d copies of %d tokens per 200)", batches[MaskedMarginals], want, perBatch, len(wt1)+2)
	}
	for i, mu := range muts {
		s := mu[0]
		if s.WT == s.MT && (got[i].MaskedMarginals != 0 || got[i].WTMarginals != 0) {
			t.Errorf("%s scores %+v, want 0", mu.Format(1), got[i])
		}
	}
	// Spot-check a few against the reference.
	ref := newReference(t, m)
	for _, i := range []int{0, 7, 20*5 + 13, len(muts) - 1} {
		want := ref.scores(wt1, muts[i])
		checkResult(t, muts[i].Format(1), Result{got[i].MaskedMarginals, got[i].WTMarginals, math.NaN(), math.NaN()}, want, MaskedMarginals|WTMarginals)
	}
}

// TestScoreAsyncBackend: on a backend whose reads land only at the fence
// (as on a GPU), results are the same and no output is read early or freed
// with a copy pending.
func TestScoreAsyncBackend(t *testing.T) {
	t.Parallel()
	be := esmtest.NewAsync(cpu.New(cpu.Options{Threads: 2}))
	m, err := esm.LoadModel(testutil.TinyModelDir(), be)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	defer m.Close()
	ref := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	vars := []Variant{{0, mustMutant(t, "E10K")}, {1, mustMutant(t, "W6F:W7Y")}, {0, mustMutant(t, "M1A")}}
	run := func(m *esm.Model) []Result {
		sc, err := New(m, Options{ToksPerBatch: 70})
		if err != nil {
			t.Fatal(err)
		}
		r, err := sc.Score(context.Background(), []string{wt0, wt1}, vars, AllStrategies)
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Close(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	got, want := run(m), run(ref)
	for i := range vars {
		checkResult(t, vars[i].Mutant.Format(1), got[i], want[i], AllStrategies)
	}
	if err := be.Err(); err != nil {
		t.Error(err)
	}
	if be.MaxOutstanding < 2 {
		t.Errorf("at most %d fences outstanding: the next batch was not launched before the previous was read", be.MaxOutstanding)
	}
	if be.Live() != 0 {
		t.Errorf("%d host blocks not freed after Close", be.Live())
	}
}

// TestScoreCancel: a cancelled context stops the passes with its error, and
// the Scorer can be used again.
func TestScoreCancel(t *testing.T) {
	t.Parallel()
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	sc, err := New(m, Options{ToksPerBatch: 64, Progress: func(Strategy, int64, int64) {
		calls++
		if calls == 2 {
			cancel()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	vars := []Variant{{0, mustMutant(t, "E10K")}}
	if _, err := sc.Score(ctx, []string{wt0}, vars, PLL); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Score: %v, want context.Canceled", err)
	}
	if calls > 3 {
		t.Errorf("%d batches read after the cancel, want at most one more", calls-2)
	}
	r, err := sc.Score(context.Background(), []string{wt0}, vars, MaskedMarginals)
	if err != nil || math.IsNaN(r[0].MaskedMarginals) {
		t.Fatalf("Score after a cancel: %v, %v", r, err)
	}
}

func TestScoreRejects(t *testing.T) {
	t.Parallel()
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	sc, err := New(m, Options{MaxResidues: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ctx := context.Background()
	for _, c := range []struct {
		wts  []string
		vars []Variant
		want string
	}{
		{[]string{wt0}, []Variant{{0, Mutant{{Pos: 3, WT: 'K', MT: 'A'}}}}, "K3A: the wild type has A at position 3, not K"},
		{[]string{wt0}, []Variant{{0, Mutant{{Pos: 31, WT: 'K', MT: 'A'}}}}, "position 31 is past the end of the wild type (30 residues"},
		{[]string{wt0}, []Variant{{1, mustMutant(t, "M1A")}}, "names wild type 1 of 1"},
		{[]string{wt0}, []Variant{{0, nil}}, "no substitutions"},
		{[]string{"MK<mask>L"}, nil, `'<' at residue 3 is not a residue letter`},
		{[]string{"MKT-L"}, nil, `'-' at residue 4`},
		{[]string{""}, nil, "empty sequence"},
		{[]string{strings.Repeat("A", 41)}, nil, "41 residues, more than the 40 scored whole"},
	} {
		_, err := sc.Score(ctx, c.wts, c.vars, MaskedMarginals)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Score(%q, %v): %v, want an error containing %q", c.wts, c.vars, err, c.want)
		}
	}
	small, err := New(m, Options{ToksPerBatch: 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Score(ctx, []string{wt0}, nil, MaskedMarginals); err == nil || !strings.Contains(err.Error(), "30 residues plus BOS/EOS do not fit the 20 tokens per batch") {
		t.Errorf("a wild type longer than the budget: %v", err)
	}
	if _, err := New(m, Options{ToksPerBatch: 2}); err == nil {
		t.Error("New accepted a budget of 2 tokens")
	}
	// Lower case is accepted and scored as upper case.
	a, err := sc.Score(ctx, []string{strings.ToLower(wt0)}, []Variant{{0, mustMutant(t, "E10K")}}, MaskedMarginals)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sc.Score(ctx, []string{wt0}, []Variant{{0, mustMutant(t, "E10K")}}, MaskedMarginals)
	if err != nil || a[0].MaskedMarginals != b[0].MaskedMarginals {
		t.Errorf("lower-case wild type: %+v, upper case %+v (%v)", a, b, err)
	}
}

func TestParseStrategy(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   []string
		want Strategy
		err  bool
	}{
		{[]string{"masked-marginals"}, MaskedMarginals, false},
		{[]string{"wt-marginals,pll"}, WTMarginals | PLL, false},
		{[]string{"pseudo-ppl", "Masked-Marginals"}, PLL | MaskedMarginals, false},
		{[]string{"ppl"}, 0, true},
		{[]string{""}, 0, true},
		{nil, 0, true},
	} {
		got, err := ParseStrategy(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseStrategy(%q) = %v, %v; want %v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
	if s := (MaskedMarginals | PLL).String(); s != "masked-marginals,pll" {
		t.Errorf("String() = %q", s)
	}
}

func TestParseMutant(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in     string
		offset int
		want   Mutant
	}{
		{"A23G", 1, Mutant{{23, 'A', 'G'}}},
		{"A23G:K45R", 1, Mutant{{23, 'A', 'G'}, {45, 'K', 'R'}}},
		{"K45R:A23G", 1, Mutant{{45, 'K', 'R'}, {23, 'A', 'G'}}},
		{"A24G", 24, Mutant{{1, 'A', 'G'}}}, // predict.py's --offset-idx 24: residue 24 is the first
		{"A0G", 0, Mutant{{1, 'A', 'G'}}},   // predict.py's default numbering (0-based)
		{"A5A", 1, Mutant{{5, 'A', 'A'}}},
		{"X7C", 1, Mutant{{7, 'X', 'C'}}},
	} {
		got, err := ParseMutant(c.in, c.offset)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseMutant(%q, %d) = %v, %v; want %v", c.in, c.offset, got, err, c.want)
		}
		if f := got.Format(c.offset); err == nil && f != c.in {
			t.Errorf("Format of %q = %q", c.in, f)
		}
	}
	for _, c := range []struct {
		in, want string
	}{
		{"", "empty mutant"},
		{"A2", "too short"},
		{"A23", `'3' is not a residue letter`},
		{"a23G", `'a' is not a residue letter`},
		{"A23*", `'*' is not a residue letter`},
		{"J23A", `'J' is not a residue letter`},
		{"A2x3G", `position "2x3" is not a number`},
		{"A-3G", `position "-3" is not a number`},
		{"A+3G", `position "+3" is not a number`},
		{"A 3G", `position " 3" is not a number`},
		{" A3G", `byte 0x20 is not a residue letter`},
		{"A03G", "leading zero"},
		{"A0G", "position 0 is before the first residue (numbered 1)"},
		{"A1234567890G", "more than 9 digits"},
		{"A3G:", "empty substitution"},
		{"A3G::K4R", "empty substitution"},
		{"A3G:A3C", "changes position 3 twice"},
		{"A3G,K4R", `position "3G,K4" is not a number`},
		{strings.Repeat("A1G:", MaxSubstitutions) + "A1G", "substitutions, more than 1024"},
	} {
		_, err := ParseMutant(c.in, 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseMutant(%q): %v, want an error containing %q", c.in, err, c.want)
		}
		if err != nil && len(err.Error()) > 3*QuoteBytes {
			t.Errorf("ParseMutant(%q): error of %d bytes quotes too much", c.in[:20], len(err.Error()))
		}
	}
	if _, err := ParseMutant("A1G", MaxOffset+1); err == nil {
		t.Error("an offset beyond MaxOffset was accepted")
	}
}

func TestMutantCheckNamesTheMismatch(t *testing.T) {
	t.Parallel()
	m, err := ParseMutant("A24G:K30R", 24)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Check("AMKTAYIAK", 24)
	const want = "K30R: the wild type has I at position 30, not K"
	if err == nil || err.Error() != want {
		t.Fatalf("Check: %v, want %q", err, want)
	}
	if got := m[:1].Apply("AMKTAYIAK"); got != "GMKTAYIAK" {
		t.Errorf("Apply = %q", got)
	}
}

// TestScoreNonFinite: a model whose logits hold a NaN (here the LM head's
// bias of one vocabulary entry, as a damaged checkpoint or an fp16
// overflow gives) makes every strategy fail with ErrNonFinite naming the
// wild type and residue, never a NaN score.
func TestScoreNonFinite(t *testing.T) {
	cfg, err := esmtest.Config("8M")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Layers = 1
	src := esmtest.Random(cfg, 3)
	src["lm_head.bias"][7] = float32(math.NaN())
	m, err := esm.NewModel(cfg, src, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sc, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	vars := []Variant{{WildType: 1, Mutant: mustMutant(t, "G2A")}}
	for _, strat := range []Strategy{MaskedMarginals, WTMarginals, PLL} {
		res, err := sc.Score(context.Background(), []string{wt0, wt1}, vars, strat)
		var nf *NonFiniteError
		if !errors.Is(err, ErrNonFinite) || !errors.As(err, &nf) {
			t.Fatalf("%s: %v, %v; want ErrNonFinite", strat, res, err)
		}
		if nf.WildType != 1 || nf.Residue < 1 || nf.Residue > len(wt1) {
			t.Errorf("%s: %+v: want wild type 1 and a residue of it", strat, nf)
		}
	}
}

// TestMutantCheckHandBuilt: a hand-built Mutant with a mutant letter that is
// no residue (a digit, lower case, NUL, J) or a position changed twice is an
// error; before, Score mapped such letters to <cls> and summed or dropped
// the double change, with finite scores and no error.
func TestMutantCheckHandBuilt(t *testing.T) {
	t.Parallel()
	const wt = "MPADAREYLE"
	for _, mt := range []byte{'1', 'k', 0, 'J'} {
		m := Mutant{{Pos: 10, WT: 'E', MT: mt}}
		if err := m.Check(wt, 1); err == nil || !strings.Contains(err.Error(), "is not a residue letter") {
			t.Errorf("mutant letter %q: %v", mt, err)
		}
	}
	twice := Mutant{{Pos: 10, WT: 'E', MT: 'K'}, {Pos: 10, WT: 'E', MT: 'G'}}
	if err := twice.Check(wt, 1); err == nil || !strings.Contains(err.Error(), "changes position 10 twice") {
		t.Errorf("twice: %v", err)
	}
	if err := (Mutant{{Pos: 10, WT: 'E', MT: 'K'}, {Pos: 1, WT: 'M', MT: 'A'}}).Check(wt, 1); err != nil {
		t.Errorf("a valid double mutant: %v", err)
	}
}
