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

// Tolerances against HF (absolute, nats). tests/README.md measures the
// logits of two independent fp32 implementations (HF and the ESM2
// equations; the Go CPU backend against HF) apart by up to ~3e-6 of
// max|logit|; the tiny model's random weights give |logit| up to ~50, so a
// log-probability (a logit minus a log-sum-exp) moves by up to ~3e-4. A
// marginal sums 2 per substitution (3 at most in the fixture: 2e-3); a PLL
// sums L = 71 or 80 of them, whose errors are not all of one sign: 80 x
// 3e-4 = 2.4e-2 is the bound, 5e-3 the expected size. A semantic error (a
// row off by one, a mask missing, no token-dropout rescale, predict.py's
// pseudo-ppl indexing) moves a score by far more than 0.1.
const (
	fxTolMarginal = 2e-3
	fxTolPLL      = 2.5e-2
)

func TestFixtureHF(t *testing.T) {
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
	got, err := sc.Score(context.Background(), seqs, vars, AllStrategies)
	if err != nil {
		t.Fatal(err)
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
	t.Logf("max |Go - HF| (nats): %v", worst)
}
