package score

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/weights"
)

// ScoreFixtureVersion is the layout of score_tiny.safetensors this test
// reads; tests/gen_score_fixtures.py writes it as
// esm2go_score_fixture_version.
const ScoreFixtureVersion = "1"

// Tolerances against HF (absolute, nats). The fixture's own check puts HF
// fp32 within 4e-5 of the fp64 ESM2 equations on log-probabilities and
// marginals and within 3e-4 on PLLs (sums of 71 or 80 log-probabilities of
// magnitude up to ~50: the tiny model's weights are random). The Go CPU
// backend is a second fp32 implementation with errors of the same size, so
// the two differ by about their sum. Measured (2026-12-02): 3.5e-5 on
// marginals and scan entries, 5e-4 on PLL. The tolerances leave ~10x: a
// semantic error (a row off by one, a mask missing, no token-dropout
// rescale, predict.py's pseudo-ppl indexing) moves a score by more than
// 0.1.
const (
	fxTolMarginal = 5e-4
	fxTolPLL      = 5e-3
)

func TestFixtureHF(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.RepoRoot(), "tests", "testdata", "fixtures", "score_tiny.safetensors")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s not generated yet: run tests/gen_score_fixtures.py --out tests/testdata/fixtures on a host with torch (the Go-side references in score_test.go cover the formulas meanwhile)", path)
	}
	f, err := weights.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v := f.Metadata["esm2go_score_fixture_version"]; v != ScoreFixtureVersion {
		t.Fatalf("%s: version %q, this test reads %q: rerun tests/gen_score_fixtures.py", path, v, ScoreFixtureVersion)
	}
	var wts []struct{ Name, Record, Sequence string }
	var muts map[string][]string
	var scan struct{ Wildtype, Alphabet string }
	for k, dst := range map[string]any{"wildtypes": &wts, "mutants": &muts, "scan": &scan} {
		if err := json.Unmarshal([]byte(f.Metadata[k]), dst); err != nil {
			t.Fatalf("%s: metadata %s: %v", path, k, err)
		}
	}
	tensor := func(name string, n int) []float32 {
		t.Helper()
		tn, ok := f.Tensors[name]
		if !ok {
			t.Fatalf("%s: no tensor %s", path, name)
		}
		d, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if len(d) != n {
			t.Fatalf("%s: %d values, want %d", name, len(d), n)
		}
		return d
	}
	t.Logf("fixture checks (HF fp32 vs fp64 equations): %s", f.Metadata["checks"])

	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	sc, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	seqs := make([]string, len(wts))
	var vars []Variant
	var names []string
	for w, wt := range wts {
		seqs[w] = wt.Sequence
		for _, s := range muts[wt.Name] {
			vars = append(vars, Variant{WildType: w, Mutant: mustMutant(t, s)})
			names = append(names, wt.Name+" "+s)
		}
	}
	got, err := sc.Score(context.Background(), seqs, vars, MaskedMarginals|WTMarginals)
	if err != nil {
		t.Fatal(err)
	}
	// PLL costs L copies per mutant: check it on four mutants per wild
	// type (the fixture lists residue 1, residue L, ..., a double, a
	// triple last), which keeps this test near a second of CPU.
	var pllVars []Variant
	var pllOf []int // index into vars
	for i, off := 0, 0; i < len(wts); i++ {
		n := len(muts[wts[i].Name])
		for _, k := range []int{0, 1, n - 2, n - 1} {
			pllVars = append(pllVars, vars[off+k])
			pllOf = append(pllOf, off+k)
		}
		off += n
	}
	pll, err := sc.Score(context.Background(), seqs, pllVars, PLL)
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range pllOf {
		got[i].PLL, got[i].PLLMutant = pll[k].PLL, pll[k].PLLMutant
	}
	worst := map[string]float64{}
	check := func(kind, what string, got, want, tol float64) {
		d := math.Abs(got - want)
		worst[kind] = math.Max(worst[kind], d)
		if !(d <= tol) {
			t.Errorf("%s: %s = %.7g, HF %.7g (|diff| %.3g > %.0e)", what, kind, got, want, d, tol)
		}
	}
	i := 0
	for _, wt := range wts {
		n := len(muts[wt.Name])
		mm := tensor(wt.Name+".masked_marginals", n)
		wm := tensor(wt.Name+".wt_marginals", n)
		pm := tensor(wt.Name+".pll_mutant", n)
		pw := tensor(wt.Name+".pll_wt", 1)[0]
		for k := 0; k < n; k, i = k+1, i+1 {
			check("masked_marginals", names[i], got[i].MaskedMarginals, float64(mm[k]), fxTolMarginal)
			check("wt_marginals", names[i], got[i].WTMarginals, float64(wm[k]), fxTolMarginal)
			if math.IsNaN(got[i].PLL) {
				continue // not in the PLL subset
			}
			check("pll_mutant", names[i], got[i].PLLMutant, float64(pm[k]), fxTolPLL)
			check("pll", names[i], got[i].PLL, float64(pm[k])-float64(pw), fxTolPLL)
		}
	}

	// The scan: one masked-marginals pass over every position.
	w := -1
	for k, wt := range wts {
		if wt.Name == scan.Wildtype {
			w = k
		}
	}
	if w < 0 || scan.Alphabet != StandardResidues {
		t.Fatalf("scan of %q over %q: want a fixture wild type over %s", scan.Wildtype, scan.Alphabet, StandardResidues)
	}
	seq := seqs[w]
	L, A := len(seq), len(StandardResidues)
	wantMM := tensor("scan.masked_marginals", A*L) // (A, L)
	wantWM := tensor("scan.wt_marginals", A*L)
	sm := ScanMutants(seq)
	sv := make([]Variant, len(sm))
	for k, mu := range sm {
		sv[k] = Variant{0, mu}
	}
	sg, err := sc.Score(context.Background(), []string{seq}, sv, MaskedMarginals|WTMarginals)
	if err != nil {
		t.Fatal(err)
	}
	for k, mu := range sm { // k = (pos-1)*A + a
		pos, a := k/A, k%A
		check("scan_masked_marginals", mu.Format(1), sg[k].MaskedMarginals, float64(wantMM[a*L+pos]), fxTolMarginal)
		check("scan_wt_marginals", mu.Format(1), sg[k].WTMarginals, float64(wantWM[a*L+pos]), fxTolMarginal)
	}
	if worst["pll"] == 0 && worst["pll_mutant"] == 0 {
		t.Error("no PLL was compared")
	}
	t.Logf("max |Go - HF| (nats): %v", worst)
}
