package main

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/score"
	"github.com/parquet-go/parquet-go"
)

// Two short wild types (the first residues of two records of
// fairesm_some_proteins.fasta), so that PLL stays fast.
const scoreFasta = ">P1 first\nMPADAREYLESKHATRRFDR\n>P2\nMGPPRWWKGITGLAAV\n"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTSV(t *testing.T, path string, comma rune) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = comma
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestScoreCLIMutations: the table's rows come back in order with their
// other columns, one score column per strategy, the values the library
// computes (offset numbering, ids from the table).
func TestScoreCLIMutations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fa := writeFile(t, dir, "wt.fasta", scoreFasta)
	table := "protein\tmutant\tDMS_score\n" +
		"P2\tW15F:W16Y\t-1.5\n" +
		"P1\tM10A\t0.25\n" +
		"P1\tE19K\t\"a\tb\"\n" +
		"P1\tA12A\t0\n"
	muts := writeFile(t, dir, "muts.tsv", table)
	out := filepath.Join(dir, "scores.tsv")
	code, _, errs := runCLI(t, "score", "--model", tinyModel, "--device", "cpu", "--mutations", muts, "--id-col", "protein",
		"--offset", "10", "--strategy", "masked-marginals,wt-marginals", "--strategy", "pll", "--out", out, fa)
	if code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	rows := readTSV(t, out, '\t')
	wantHeader := []string{"id", "mutant", "DMS_score", "masked_marginals", "wt_marginals", "pll", "pll_mutant"}
	if !slices.Equal(rows[0], wantHeader) {
		t.Fatalf("header %q, want %q", rows[0], wantHeader)
	}
	if len(rows) != 5 {
		t.Fatalf("%d rows, want 4 and a header", len(rows)-1)
	}
	for i, want := range [][]string{{"P2", "W15F:W16Y", "-1.5"}, {"P1", "M10A", "0.25"}, {"P1", "E19K", "a\tb"}, {"P1", "A12A", "0"}} {
		if !slices.Equal(rows[i+1][:3], want) {
			t.Errorf("row %d starts %q, want %q", i+1, rows[i+1][:3], want)
		}
	}
	if got := rows[4][3:]; !slices.Equal(got, []string{"0", "0", "0", got[3]}) {
		t.Errorf("synonymous A12A scores %q, want 0 0 0 and PLL(wild type)", got)
	}

	// The same scores from the library.
	m := testutil.LoadTiny(t, cpu.Options{Threads: 2})
	sc, err := score.New(m, score.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	mut := func(s string) score.Mutant {
		mu, err := score.ParseMutant(s, 10)
		if err != nil {
			t.Fatal(err)
		}
		return mu
	}
	vars := []score.Variant{{WildType: 1, Mutant: mut("W15F:W16Y")}, {WildType: 0, Mutant: mut("M10A")}, {WildType: 0, Mutant: mut("E19K")}, {WildType: 0, Mutant: mut("A12A")}}
	res, err := sc.Score(context.Background(), []string{"MPADAREYLESKHATRRFDR", "MGPPRWWKGITGLAAV"}, vars, score.AllStrategies)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		want := []string{formatScore(r.MaskedMarginals), formatScore(r.WTMarginals), formatScore(r.PLL), formatScore(r.PLLMutant)}
		if !slices.Equal(rows[i+1][3:], want) {
			t.Errorf("row %d scores %q, library %q", i+1, rows[i+1][3:], want)
		}
	}
}

// TestScoreCLIScan: --scan writes 20 rows per position in the offset's
// numbering, CSV for a .csv name; the wild-type letter scores 0.
func TestScoreCLIScan(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fa := writeFile(t, dir, "wt.fasta", ">only\nMKTAYIAK\n")
	out := filepath.Join(dir, "scan.csv")
	code, _, errs := runCLI(t, "score", "--model", tinyModel, "--device", "cpu", "--scan", "--offset-idx", "0", "-q", "--out", out, fa)
	if code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	if errs != "" {
		t.Errorf("--quiet printed %q", errs)
	}
	rows := readTSV(t, out, ',')
	if !slices.Equal(rows[0], []string{"id", "mutant", "masked_marginals"}) || len(rows) != 1+20*8 {
		t.Fatalf("header %q, %d rows; want masked_marginals and %d rows", rows[0], len(rows)-1, 20*8)
	}
	if rows[1][1] != "M0A" || rows[len(rows)-1][1] != "K7Y" {
		t.Errorf("first and last mutants %s, %s; want M0A, K7Y (0-based numbering)", rows[1][1], rows[len(rows)-1][1])
	}
	for _, r := range rows[1:] {
		if r[1][0] == r[1][len(r[1])-1] && r[2] != "0" {
			t.Errorf("%s scores %s, want 0", r[1], r[2])
		}
	}
}

func TestScoreCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fa := writeFile(t, dir, "wt.fasta", scoreFasta)
	one := writeFile(t, dir, "one.fasta", ">P1\nMPADAREYLESKHATRRFDR\n")
	bad := writeFile(t, dir, "bad.fasta", ">P1\nMPAD1REY\n")
	noID := writeFile(t, dir, "noid.csv", "mutant\nM1A\n")
	mismatch := writeFile(t, dir, "mismatch.csv", "mutant,x\nM1A,1\nK5R,2\n")
	clash := writeFile(t, dir, "clash.csv", "mutant,pll\nM1A,1\n")
	exists := writeFile(t, dir, "exists.tsv", "keep me\n")
	dup := writeFile(t, dir, "dup.fasta", ">w1\nMPAD\n>w1 again\nMK\n")
	empty := writeFile(t, dir, "empty.fasta", ">w1\nMPAD\n>\nMK\n")
	out := filepath.Join(dir, "out.tsv")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--mutations", noID, "--out", out, fa}, 1, `noid.csv: no "id" column to say which of the 2 wild types`},
		{[]string{"--mutations", mismatch, "--out", out, one}, 1, `mismatch.csv:3: mutant "K5R" of "P1": K5R: the wild type has A at position 5, not K`},
		{[]string{"--mutations", clash, "--strategy", "pll", "--out", out, one}, 1, `column named "pll"`},
		{[]string{"--mutations", noID, "--out", exists, one}, 1, "exists (use --overwrite to replace it)"},
		{[]string{"--mutations", noID, "--out", out, bad}, 1, `bad.fasta:1: record "P1": '1' at residue 5 is not a residue letter`},
		{[]string{"--mutations", noID, "--scan", "--out", out, one}, 2, "give exactly one of --mutations TABLE and --scan"},
		{[]string{"--out", out, one}, 2, "give exactly one of --mutations TABLE and --scan"},
		{[]string{"--scan", "--strategy", "ppl", "--out", out, one}, 2, `unknown strategy "ppl"`},
		{[]string{"--scan", "--device", "cuda:0,1", "--out", out, one}, 2, "score runs on one device"},
		{[]string{"--scan", "--out", out}, 2, "no FASTA input given"},
		{[]string{"--scan", "--out", out, dup}, 1, `--scan: FASTA records 1 and 2 are both "w1"; the scan's rows are named by id: make the ids unique`},
		{[]string{"--scan", "--out", out, empty}, 1, "--scan: FASTA record 2 has an empty id"},
	} {
		code, _, errs := runCLI(t, append([]string{"score", "--model", tinyModel, "--device", "cpu"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%q: status %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep me\n" {
		t.Errorf("a refused run changed the existing output: %q", b)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run left an output")
	}
}

// TestScanJobs: a scan is cut into consecutive wild types of at most max
// variants (20 a residue), a wild type longer than that alone; every wild
// type once, in order.
func TestScanJobs(t *testing.T) {
	seqs := []string{"MKTA", "MK", "MKTAYIAKQR", "M", "MKT"} // 80, 40, 200, 20, 60 variants
	got := scanJobs(seqs, 100)
	want := [][2]int{{0, 1}, {1, 2}, {2, 3}, {3, 5}}
	if len(got) != len(want) {
		t.Fatalf("%+v, want %v", got, want)
	}
	for i, j := range got {
		if [2]int{j.w0, j.w1} != want[i] || !j.scan || j.vars != nil {
			t.Errorf("job %d: %+v, want %v", i, j, want[i])
		}
	}
	if got := scanJobs(seqs, 1<<20); len(got) != 1 || got[0].w0 != 0 || got[0].w1 != len(seqs) {
		t.Errorf("one job expected: %+v", got)
	}
}

// TestScanInParts: a scan scored in several parts (each a Score call on
// its wild types) gives the rows and scores of one call: the same
// variants, the wild-type index counted over every wild type, scores within
// the batching tolerance of score's tests (2e-4 nats: packing changes
// which rows share a matmul, by a few fp32 ulps).
func TestScanInParts(t *testing.T) {
	t.Parallel()
	seqs := []string{"MKTAYIAKQR", "MPADAREYLESK", "GGSW", "MGPPRWWKGITGLAAVV"}
	open := func() (*esm.Model, error) { return esm.LoadModel(tinyModel, cpu.New(cpu.Options{Threads: 2})) }
	type row struct {
		w   int
		mt  string
		val float64
	}
	run := func(jobs []scoreJob) []row {
		var out []row
		err := runScore(context.Background(), open, nil, score.Options{}, seqs, jobs, score.MaskedMarginals|score.WTMarginals, nil,
			func(j scoreJob, vars []score.Variant, res []score.Result) error {
				for i, v := range vars {
					out = append(out, row{j.w0 + v.WildType, v.Mutant.Format(1), res[i].MaskedMarginals + 1000*res[i].WTMarginals})
				}
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	whole, parts := run(scanJobs(seqs, 1<<20)), run(scanJobs(seqs, 250))
	if len(whole) != 20*(10+12+4+17) || len(parts) != len(whole) {
		t.Fatalf("%d and %d rows", len(whole), len(parts))
	}
	for i := range whole {
		a, b := whole[i], parts[i]
		if a.w != b.w || a.mt != b.mt || math.Abs(a.val-b.val) > 2e-4*1001 {
			t.Fatalf("row %d: %+v in one part, %+v in several", i, a, b)
		}
	}
}

// TestScoreCLIParquet: --out NAME.parquet writes the same rows as TSV, the
// scores as doubles (TSV prints 8 significant digits: compared at that
// precision), the table's other columns as strings, and the run's
// settings in the esm2go.score metadata.
func TestScoreCLIParquet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fa := writeFile(t, dir, "wt.fasta", scoreFasta)
	tab := writeFile(t, dir, "muts.tsv", "id\tmutant\tdms\nP1\tA3G\t0.5\nP2\tG2A:P3W\t-1\n")
	args := func(out string) []string {
		return []string{"score", "--model", tinyModel, "--device", "cpu", "-q", "--mutations", tab, "--strategy", "masked-marginals,pll", "--out", out, fa}
	}
	tsv, pq := filepath.Join(dir, "s.tsv"), filepath.Join(dir, "s.parquet")
	for _, out := range []string{tsv, pq} {
		if code, _, errs := runCLI(t, args(out)...); code != 0 {
			t.Fatalf("%s: status %d: %s", out, code, errs)
		}
	}
	want := readTSV(t, tsv, '\t')
	f, err := os.Open(pq)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	if info.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", info.Mode().Perm())
	}
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	if meta, _ := pf.Lookup("esm2go.score"); !strings.Contains(meta, `"strategy":"masked-marginals,pll"`) {
		t.Errorf("esm2go.score metadata %q", meta)
	}
	for i, fld := range pf.Schema().Fields() {
		if fld.Name() != want[0][i] {
			t.Fatalf("column %d %s, want %s", i, fld.Name(), want[0][i])
		}
	}
	rows := make([]parquet.Row, 10)
	n, _ := parquet.NewReader(pf).ReadRows(rows)
	if n != len(want)-1 {
		t.Fatalf("%d rows, want %d", n, len(want)-1)
	}
	for i, row := range rows[:n] {
		for j, v := range row {
			got := v.String()
			if v.Kind() == parquet.Double {
				got = formatScore(v.Double())
			}
			if got != want[i+1][j] {
				t.Errorf("row %d column %s: %s, TSV has %s", i, want[0][j], got, want[i+1][j])
			}
		}
	}
}
