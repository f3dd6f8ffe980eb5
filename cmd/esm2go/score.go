package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
	"github.com/esm2go/esm2go/score"
	"github.com/spf13/pflag"
)

// scoreFlags are the score command's flags, named after fair-esm's
// examples/variant-prediction/predict.py where they mean the same.
type scoreFlags struct {
	model       string
	mutations   string
	scan        bool
	strategy    []string
	out         string
	offset      int
	mutationCol string
	idCol       string
	toks        int
	device      string
	precision   string
	threads     int
	overwrite   bool
	quiet       bool
}

func newScoreFlagSet(f *scoreFlags) *pflag.FlagSet {
	fs := newFlagSet("score")
	fs.StringVar(&f.model, "model", defaultModel, "model: Hugging Face id, directory (config.json + model.safetensors) or fair-esm .pt")
	fs.StringVar(&f.mutations, "mutations", "", "table of mutants: CSV or TSV (by the name, else by the header) with a header and a mutant column (A23G, A23G:K45R); its other columns are copied to the output")
	fs.BoolVar(&f.scan, "scan", false, "instead of --mutations: every single substitution of every wild type (each position x the 20 standard residues)")
	fs.StringSliceVar(&f.strategy, "strategy", []string{"masked-marginals"}, "masked-marginals, wt-marginals, pll (pseudo-log-likelihood; pseudo-ppl is accepted); a comma list writes a score column for each")
	fs.StringVarP(&f.out, "out", "o", "", "output table: a name ending in .csv is CSV, .parquet parquet (scores as doubles), anything else TSV; - writes TSV to stdout (required)")
	fs.IntVar(&f.offset, "offset", 1, "the number the first residue of each wild type carries in the mutants' numbering (also --offset-idx, as in predict.py, whose default is 0)")
	fs.StringVar(&f.mutationCol, "mutation-col", "mutant", "the --mutations column holding the mutants")
	fs.StringVar(&f.idCol, "id-col", "id", "the --mutations column naming each row's wild type (a FASTA id); not needed with one wild type")
	fs.IntVar(&f.toks, "toks-per-batch", 0, "tokens per packed batch of masked copies; 0 = auto: 4096 on the CPU, from free GPU memory (at most 65536) on a GPU")
	fs.StringVar(&f.device, "device", "auto", "auto, cpu, cuda or cuda:N (auto: GPU 0 when usable, else the CPU; one device)")
	fs.StringVar(&f.precision, "precision", "fp32", "GPU compute precision: fp32, fp16 or bf16 (the CPU always uses fp32)")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace an existing --out")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print warnings and errors only")
	norm := fs.GetNormalizeFunc()
	fs.SetNormalizeFunc(func(fs *pflag.FlagSet, n string) pflag.NormalizedName {
		if nn := norm(fs, n); nn != "offset-idx" {
			return nn
		}
		return "offset"
	})
	return fs
}

func scoreUsage() string {
	var f scoreFlags
	return "Usage: esm2go score [flags] --mutations TABLE --out SCORES FASTA...\n" +
		"       esm2go score [flags] --scan --out SCORES FASTA...\n\n" +
		"Scores protein variants with the model's masked-LM head, as fair-esm's variant-prediction\n" +
		"example does: log p(mutant) - log p(wild type) at each mutated position with it masked\n" +
		"(masked-marginals) or unmasked (wt-marginals), or the pseudo-log-likelihood difference (pll).\n" +
		"The FASTA files hold the wild types. One row per mutant, in table order (or position by\n" +
		"position for --scan): id, mutant, the table's other columns, a score column per strategy.\n" +
		"See docs/SCORE.md.\n\nFlags:\n" + flagDefaults(newScoreFlagSet(&f))
}

// scoreColumns are the output's score columns for strat, in order.
func scoreColumns(strat score.Strategy) []string {
	var cols []string
	if strat.Has(score.MaskedMarginals) {
		cols = append(cols, "masked_marginals")
	}
	if strat.Has(score.WTMarginals) {
		cols = append(cols, "wt_marginals")
	}
	if strat.Has(score.PLL) {
		cols = append(cols, "pll", "pll_mutant")
	}
	return cols
}

func cmdScore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f scoreFlags
	fs := newScoreFlagSet(&f)
	usage := scoreUsage()
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	bad := func(format string, a ...any) error { return usageErrorf(usage, format, a...) }
	inputs := fs.Args()
	switch {
	case len(inputs) == 0:
		return bad("no FASTA input given (the wild-type sequences)")
	case f.out == "":
		return bad("--out is required")
	case f.scan == (f.mutations != ""):
		return bad("give exactly one of --mutations TABLE and --scan")
	case f.offset < -score.MaxOffset || f.offset > score.MaxOffset:
		return bad("invalid --offset %d (want -%d..%d)", f.offset, score.MaxOffset, score.MaxOffset)
	case f.toks < 0:
		return bad("invalid --toks-per-batch %d (want > 0, or 0 for auto)", f.toks)
	case f.threads < 0:
		return bad("invalid --threads %d (want >= 0; 0 = all cores)", f.threads)
	case f.scan && (fs.Changed("mutation-col") || fs.Changed("id-col")):
		return bad("--mutation-col and --id-col name columns of --mutations; --scan has no table")
	}
	strat, err := score.ParseStrategy(f.strategy)
	if err != nil {
		return bad("invalid --strategy: %v", err)
	}
	dev, err := parseDevice(f.device)
	if err != nil {
		return bad("%v", err)
	}
	if dev.all || len(dev.ords) > 1 {
		return bad("--device %s: score runs on one device (cuda:N)", dev.raw)
	}
	precision, err := parsePrecision(f.precision)
	if err != nil {
		return bad("%v", err)
	}
	if err := checkScoreOut(f.out, f.overwrite, append(slices.Clone(inputs), f.mutations)); err != nil {
		return err
	}
	note := func(format string, a ...any) {
		if !f.quiet {
			fmt.Fprintf(stderr, "esm2go: "+format+"\n", a...)
		}
	}

	// Inputs, all checked before the model loads.
	ids, seqs, err := readWildTypes(ctx, inputs)
	if err != nil {
		return err
	}
	var (
		tab  *score.Table
		vars []score.Variant // of a table; a scan makes its variants as it goes (scanJobs)
		jobs []scoreJob
	)
	if f.scan {
		if err := uniqueIDs(ids); err != nil {
			return err
		}
		jobs = scanJobs(seqs, scanChunkVariants)
	} else {
		tab, vars, err = readMutations(f.mutations, f.mutationCol, f.idCol, ids, seqs, f.offset)
		if err != nil {
			return err
		}
		jobs = []scoreJob{{w0: 0, w1: len(seqs), vars: vars}}
	}
	header, err := scoreHeader(tab, strat)
	if err != nil {
		return err
	}
	// The output opens before the model loads: a name parquet cannot hold
	// fails now, not after the scoring. What a killed run on the same
	// --out left is removed first.
	if f.out != "-" {
		for _, p := range removeStaleTemps(f.out) {
			note("removed %s, left by a run that was stopped", p)
		}
	}
	w, err := newScoreWriter(f.out, header, tab, ids, strat, f.offset, map[string]string{"esm2go.score": scoreMeta(f.model, strat, f.offset)})
	if err != nil {
		return err
	}
	defer w.abort()
	if strat.Has(score.PLL) {
		// An upper bound: a mutant listed twice is scored once.
		var copies int64
		used := make([]bool, len(seqs))
		count := func(w int, mutants int64) {
			copies += mutants * int64(len(seqs[w]))
			if !used[w] {
				used[w] = true
				copies += int64(len(seqs[w]))
			}
		}
		if f.scan {
			for w, seq := range seqs {
				count(w, int64(len(seq)*len(score.StandardResidues)))
			}
		} else {
			for _, v := range vars {
				count(v.WildType, 1)
			}
		}
		note("pll: up to %d masked copies (every residue of every mutant and wild-type sequence)", copies)
	}

	// Model and device.
	var dlProgress io.Writer
	if !f.quiet {
		dlProgress = stderr
	}
	ck, cfg, err := openModel(ctx, f.model, dlProgress)
	if err != nil {
		return err
	}
	defer ck.Close()
	ords, prec, err := oneDevice(dev, precision, fs.Changed("precision"), f.threads, func(s string) { note("%s", s) })
	if err != nil {
		return err
	}
	d := devices(cfg, esm.CheckpointSource{C: ck}, ords, prec, f.threads, nil)[0]

	start := time.Now()
	last := start
	var done int // wild types scored
	err = runScore(ctx, d.Open, d.Close, score.Options{
		ToksPerBatch: f.toks,
		Progress: func(pass score.Strategy, copies, total int64) {
			switch {
			case len(jobs) > 1: // a scan in parts: progress by wild type, below
				return
			case copies == total:
				note("%s: %d copies scored, %s since the model loaded", pass, total, time.Since(start).Round(time.Millisecond))
			case time.Since(last) >= 10*time.Second:
				note("%s: %d of %d copies scored", pass, copies, total)
			default:
				return
			}
			last = time.Now()
		},
	}, seqs, jobs, strat, func(sc *score.Scorer) {
		start = time.Now()
		note("model %s on %s, %s, %d tokens per batch", f.model, d.Name, prec, sc.ToksPerBatch())
	}, func(j scoreJob, vars []score.Variant, res []score.Result) error {
		w0 := 0
		if j.scan {
			w0 = j.w0
		}
		if err := w.write(w0, vars, res); err != nil {
			return err
		}
		done = j.w1
		if len(jobs) > 1 && (done == len(seqs) || time.Since(last) >= 10*time.Second) {
			note("scan: %d of %d wild types, %d rows, %s since the model loaded", done, len(seqs), w.n, time.Since(start).Round(time.Millisecond))
			last = time.Now()
		}
		return nil
	})
	if errors.Is(err, esm.ErrOutOfMemory) {
		return fmt.Errorf("%w (a smaller --toks-per-batch needs less device memory)", err)
	}
	if nf := (*score.NonFiniteError)(nil); errors.As(err, &nf) {
		return fmt.Errorf("wild type %s, residue %d (%s): %w; nothing was written", data.Quote(ids[nf.WildType]), nf.Residue, nf.What, score.ErrNonFinite)
	}
	if err != nil {
		return err
	}
	if err := w.finish(); err != nil {
		return err
	}
	if f.out != "-" {
		note("wrote %d rows to %s", w.n, f.out)
	}
	return nil
}

// uniqueIDs refuses wild types whose --scan rows could not be told apart:
// rows are keyed by id alone, so every id must be non-empty and unique.
func uniqueIDs(ids []string) error {
	first := make(map[string]int, len(ids))
	for i, id := range ids {
		if id == "" {
			return fmt.Errorf("--scan: FASTA record %d has an empty id; the scan's rows are named by id: give every record one", i+1)
		}
		if j, ok := first[id]; ok {
			return fmt.Errorf("--scan: FASTA records %d and %d are both %s; the scan's rows are named by id: make the ids unique", j+1, i+1, data.Quote(id))
		}
		first[id] = i
	}
	return nil
}

// scanChunkVariants bounds the variants of a scan scored (and held in
// memory) at once: about 100 MB of variants and results. A scan of a
// proteome (10^8 rows and more) is scored wild type after wild type
// instead of all at once.
const scanChunkVariants = 1 << 20

// scoreJob is one call of Scorer.Score: wild types [w0, w1) and, for a
// table, its variants (WildType counted from 0, not w0: a table is one
// job); a scan's variants are made when the job runs.
type scoreJob struct {
	w0, w1 int
	scan   bool
	vars   []score.Variant
}

// scanJobs cuts a scan of seqs into jobs of consecutive wild types with
// at most max variants each (at least one wild type a job).
func scanJobs(seqs []string, max int) []scoreJob {
	var jobs []scoreJob
	for w0 := 0; w0 < len(seqs); {
		w1, n := w0, 0
		for w1 < len(seqs) && (w1 == w0 || n+len(seqs[w1])*len(score.StandardResidues) <= max) {
			n += len(seqs[w1]) * len(score.StandardResidues)
			w1++
		}
		jobs = append(jobs, scoreJob{w0: w0, w1: w1, scan: true})
		w0 = w1
	}
	return jobs
}

// runScore opens the model (open, close: an embed.Device's) and, on the
// goroutine onDevice locks to its OS thread, scores each job in order,
// handing its variants and results to emit. A NonFiniteError's WildType is
// made an index into seqs.
func runScore(ctx context.Context, open func() (*esm.Model, error), closeDev func() error, opts score.Options,
	seqs []string, jobs []scoreJob, strat score.Strategy, ready func(*score.Scorer),
	emit func(scoreJob, []score.Variant, []score.Result) error) error {
	_, err := onDevice(open, closeDev, func(m *esm.Model) (_ struct{}, err error) {
		sc, err := score.New(m, opts)
		if err != nil {
			return struct{}{}, err
		}
		defer func() { err = errors.Join(err, sc.Close()) }()
		if ready != nil {
			ready(sc)
		}
		for _, j := range jobs {
			vars, wts := j.vars, seqs
			if j.scan { // its wild types' every substitution
				wts = seqs[j.w0:j.w1]
				for w := j.w0; w < j.w1; w++ {
					for _, mt := range score.ScanMutants(seqs[w]) {
						vars = append(vars, score.Variant{WildType: w - j.w0, Mutant: mt})
					}
				}
			}
			res, err := sc.Score(ctx, wts, vars, strat)
			if nf := (*score.NonFiniteError)(nil); errors.As(err, &nf) && j.scan {
				nf.WildType += j.w0
			}
			if err != nil {
				return struct{}{}, err
			}
			if err := emit(j, vars, res); err != nil {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	return err
}

// readWildTypes reads every record of the FASTA inputs: its id and its
// sequence (score.CheckWildType: residue letters, at most 1022). A record
// that cannot be scored is an error naming its file and line.
func readWildTypes(ctx context.Context, inputs []string) (ids, seqs []string, err error) {
	rd, err := data.Open(ctx, inputs, data.Options{Workers: 1, MaxResidues: esm.DefaultMaxResidues + 1})
	if err != nil {
		return nil, nil, err
	}
	defer rd.Close()
	for {
		blk, err := rd.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the wild types: %w", err)
		}
		for _, r := range blk.Records {
			where := fmt.Sprintf("%s:%d: record %s", r.Source, r.Line, data.Quote(r.ID))
			if r.Problem != "" {
				return nil, nil, fmt.Errorf("%s: %s", where, r.Problem)
			}
			if r.Truncated() {
				return nil, nil, fmt.Errorf("%s: %d residues, more than the %d scored whole (longer proteins are not truncated or windowed)", where, r.Total, esm.DefaultMaxResidues)
			}
			seq, err := score.CheckWildType(string(r.Seq), esm.DefaultMaxResidues)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", where, err)
			}
			ids, seqs = append(ids, r.ID), append(seqs, seq)
		}
	}
	if len(seqs) == 0 {
		return nil, nil, fmt.Errorf("%s: no FASTA records (the wild types)", strings.Join(inputs, ", "))
	}
	return ids, seqs, nil
}

// readMutations reads the --mutations table and resolves its rows against
// the wild types.
func readMutations(path, mutCol, idCol string, ids, seqs []string, offset int) (*score.Table, []score.Variant, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--mutations: %w", err)
	}
	defer fh.Close()
	tab, err := score.ReadTable(fh, path, score.TableOptions{Comma: score.CommaFor(path), MutantColumn: mutCol, IDColumn: idCol})
	if err != nil {
		return nil, nil, err
	}
	if len(tab.Rows) == 0 {
		return nil, nil, fmt.Errorf("%s: no rows below the header", path)
	}
	vars, err := tab.Variants(path, ids, seqs, offset)
	if err != nil {
		return nil, nil, err
	}
	return tab, vars, nil
}

// scoreHeader is the output's header: id, mutant, the table's other
// columns in order, the score columns.
func scoreHeader(tab *score.Table, strat score.Strategy) ([]string, error) {
	h := []string{"id", "mutant"}
	if tab != nil {
		for i, c := range tab.Header {
			if i != tab.Mutant && i != tab.ID {
				h = append(h, c)
			}
		}
	}
	for _, c := range scoreColumns(strat) {
		if slices.Contains(h, c) {
			return nil, fmt.Errorf("the mutations table has a column named %q, which the output's score column would repeat: rename it", c)
		}
		h = append(h, c)
	}
	if i := slices.Index(h[2:], "id"); i >= 0 || slices.Contains(h[2:], "mutant") {
		return nil, errors.New("the mutations table has a second column named id or mutant besides --id-col and --mutation-col: rename it")
	}
	return h, nil
}

// scoreWriter writes the rows (TSV, CSV for a .csv name, parquet for a
// .parquet name) to out as they are scored, through a temporary file
// renamed by finish, or to stdout (TSV) for "-".
type scoreWriter struct {
	out    string
	tmp    *os.File
	cw     *csv.Writer         // TSV or CSV
	tw     *output.TableWriter // parquet
	bw     *bufio.Writer       // under tw
	tab    *score.Table
	ids    []string
	cols   []string
	offset int
	strs   []string
	nums   []float64
	row    []string
	n      int // rows written
}

// scoreMeta is the parquet output's esm2go.score metadata.
func scoreMeta(model string, strat score.Strategy, offset int) string {
	b, _ := json.Marshal(map[string]any{"model": model, "strategy": strat.String(), "offset": offset, "esm2go_version": Version()})
	return string(b)
}

func newScoreWriter(out string, header []string, tab *score.Table, ids []string, strat score.Strategy, offset int, meta map[string]string) (*scoreWriter, error) {
	w := &scoreWriter{out: out, tab: tab, ids: ids, cols: scoreColumns(strat), offset: offset}
	var dst io.Writer = os.Stdout
	if out != "-" {
		tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
		if err := tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600
			tmp.Close()
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("--out: %w", err)
		}
		if err := lockTemp(tmp); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("--out: locking %s: %w", tmp.Name(), err)
		}
		w.tmp, dst = tmp, tmp
	}
	if out != "-" && strings.EqualFold(filepath.Ext(out), ".parquet") {
		cols := make([]output.TableColumn, len(header))
		for i, h := range header {
			cols[i] = output.TableColumn{Name: h, Kind: output.TableString}
			if i >= len(header)-len(w.cols) {
				cols[i].Kind = output.TableFloat64
			}
		}
		w.bw = bufio.NewWriterSize(dst, 1<<20)
		tw, err := output.NewTableWriter(w.bw, cols, meta)
		if err != nil {
			w.abort()
			return nil, fmt.Errorf("%s: %w", out, err)
		}
		w.tw = tw
		return w, nil
	}
	w.cw = csv.NewWriter(dst)
	if out == "-" || !strings.EqualFold(filepath.Ext(out), ".csv") {
		w.cw.Comma = '\t'
	}
	if err := w.cw.Write(header); err != nil {
		w.abort()
		return nil, fmt.Errorf("%s: %w", out, err)
	}
	return w, nil
}

// write appends the rows of vars (WildType counted from w0) and their
// results; a table's rows are its rows in order.
func (w *scoreWriter) write(w0 int, vars []score.Variant, res []score.Result) error {
	if len(res) != len(vars) {
		return fmt.Errorf("score: %d results for %d variants", len(res), len(vars))
	}
	for i, v := range vars {
		w.strs = append(w.strs[:0], w.ids[w0+v.WildType])
		if w.tab != nil {
			cells := w.tab.Rows[w.n]
			w.strs = append(w.strs, cells[w.tab.Mutant])
			for j, c := range cells {
				if j != w.tab.Mutant && j != w.tab.ID {
					w.strs = append(w.strs, c)
				}
			}
		} else {
			w.strs = append(w.strs, v.Mutant.Format(w.offset))
		}
		w.nums = w.nums[:0]
		for _, c := range w.cols {
			var x float64
			switch c {
			case "masked_marginals":
				x = res[i].MaskedMarginals
			case "wt_marginals":
				x = res[i].WTMarginals
			case "pll":
				x = res[i].PLL
			case "pll_mutant":
				x = res[i].PLLMutant
			}
			w.nums = append(w.nums, x)
		}
		var err error
		if w.tw != nil {
			err = w.tw.WriteRow(w.strs, w.nums)
		} else {
			w.row = append(w.row[:0], w.strs...)
			for _, x := range w.nums {
				w.row = append(w.row, formatScore(x))
			}
			err = w.cw.Write(w.row)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w.out, err)
		}
		w.n++
	}
	return nil
}

// finish flushes and, for a file, fsyncs it and renames it to out.
func (w *scoreWriter) finish() error {
	if w.tw != nil {
		err := w.tw.Close()
		if err == nil {
			err = w.bw.Flush()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w.out, err)
		}
	} else {
		w.cw.Flush()
		if err := w.cw.Error(); err != nil {
			return fmt.Errorf("%s: %w", w.out, err)
		}
	}
	if w.tmp == nil {
		return nil
	}
	tmp := w.tmp
	w.tmp = nil
	err := tmp.Sync()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = os.Rename(tmp.Name(), w.out); err != nil {
			err = fmt.Errorf("--out: %w", err)
		}
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("%s: %w", w.out, err)
	}
	return nil
}

// abort removes the temporary file (no-op after finish).
func (w *scoreWriter) abort() {
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp = nil
	}
}

// formatScore writes a score with 8 significant digits (the scores come
// from fp32 logits: more digits would be noise).
func formatScore(x float64) string {
	if math.IsNaN(x) {
		return "NaN"
	}
	return strconv.FormatFloat(x, 'g', 8, 64)
}

// checkScoreOut refuses an --out that exists (without --overwrite), is not a
// regular file, or is one of the inputs.
func checkScoreOut(out string, overwrite bool, inputs []string) error {
	if out == "-" {
		return nil
	}
	oi, err := os.Stat(out)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, derr := os.Stat(filepath.Dir(out)); derr != nil {
				return fmt.Errorf("--out %s: %w", out, derr)
			}
			return nil
		}
		return fmt.Errorf("--out: %w", err)
	}
	for _, in := range inputs {
		if in == "-" && sameAsStdin(out, stdinFile()) {
			return fmt.Errorf("--out %s is the file on standard input, an input of this run", out)
		}
		if ii, err := os.Stat(in); err == nil && os.SameFile(oi, ii) {
			return fmt.Errorf("--out %s is the input %s", out, in)
		}
	}
	switch {
	case !oi.Mode().IsRegular():
		return fmt.Errorf("--out %s exists and is not a regular file", out)
	case !overwrite:
		return fmt.Errorf("--out %s exists (use --overwrite to replace it)", out)
	}
	return nil
}
