package main

import (
	"context"
	"encoding/csv"
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
	fs.StringVarP(&f.out, "out", "o", "", "output table: a name ending in .csv is CSV, anything else TSV; - writes TSV to stdout (required)")
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
		vars []score.Variant
	)
	if f.scan {
		for w, seq := range seqs {
			for _, m := range score.ScanMutants(seq) {
				vars = append(vars, score.Variant{WildType: w, Mutant: m})
			}
		}
	} else {
		tab, vars, err = readMutations(f.mutations, f.mutationCol, f.idCol, ids, seqs, f.offset)
		if err != nil {
			return err
		}
	}
	header, err := scoreHeader(tab, strat)
	if err != nil {
		return err
	}
	if strat.Has(score.PLL) {
		// An upper bound: a mutant listed twice is scored once.
		var copies int64
		used := make([]bool, len(seqs))
		for _, v := range vars {
			copies += int64(len(seqs[v.WildType]))
			if !used[v.WildType] {
				used[v.WildType] = true
				copies += int64(len(seqs[v.WildType]))
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
	res, err := runScore(ctx, d.Open, d.Close, score.Options{
		ToksPerBatch: f.toks,
		Progress: func(pass score.Strategy, done, total int64) {
			switch {
			case done == total:
				note("%s: %d copies scored, %s since the model loaded", pass, total, time.Since(start).Round(time.Millisecond))
			case time.Since(last) >= 10*time.Second:
				note("%s: %d of %d copies scored", pass, done, total)
			default:
				return
			}
			last = time.Now()
		},
	}, seqs, vars, strat, func(sc *score.Scorer) {
		start = time.Now()
		note("model %s on %s, %s, %d tokens per batch", f.model, d.Name, prec, sc.ToksPerBatch())
	})
	if errors.Is(err, esm.ErrOutOfMemory) {
		return fmt.Errorf("%w (a smaller --toks-per-batch needs less device memory)", err)
	}
	if nf := (*score.NonFiniteError)(nil); errors.As(err, &nf) && nf.WildType < len(ids) {
		return fmt.Errorf("wild type %s, residue %d (%s): %w; nothing was written", data.Quote(ids[nf.WildType]), nf.Residue, nf.What, score.ErrNonFinite)
	}
	if err != nil {
		return err
	}
	if err := writeScores(f.out, header, tab, ids, vars, res, strat, f.offset); err != nil {
		return err
	}
	if f.out != "-" {
		note("wrote %d rows to %s", len(res), f.out)
	}
	return nil
}

// runScore opens the model (open, close: an embed.Device's) and scores on
// the goroutine onDevice locks to its OS thread.
func runScore(ctx context.Context, open func() (*esm.Model, error), closeDev func() error, opts score.Options,
	seqs []string, vars []score.Variant, strat score.Strategy, ready func(*score.Scorer)) ([]score.Result, error) {
	return onDevice(open, closeDev, func(m *esm.Model) (res []score.Result, err error) {
		sc, err := score.New(m, opts)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, sc.Close()) }()
		if ready != nil {
			ready(sc)
		}
		return sc.Score(ctx, seqs, vars, strat)
	})
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

// writeScores writes the rows (TSV, or CSV for a .csv name) to out, through
// a temporary file renamed at the end, or to stdout for "-".
func writeScores(out string, header []string, tab *score.Table, ids []string, vars []score.Variant, res []score.Result, strat score.Strategy, offset int) (err error) {
	var w io.Writer = os.Stdout
	var tmp *os.File
	if out != "-" {
		tmp, err = os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer func() {
			if err != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		w = tmp
	}
	cw := csv.NewWriter(w)
	if out == "-" || !strings.EqualFold(filepath.Ext(out), ".csv") {
		cw.Comma = '\t'
	}
	if err := cw.Write(header); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	cols := scoreColumns(strat)
	row := make([]string, 0, len(header))
	for i, v := range vars {
		row = append(row[:0], ids[v.WildType])
		if tab != nil {
			cells := tab.Rows[i]
			row = append(row, cells[tab.Mutant])
			for j, c := range cells {
				if j != tab.Mutant && j != tab.ID {
					row = append(row, c)
				}
			}
		} else {
			row = append(row, v.Mutant.Format(offset))
		}
		for _, c := range cols {
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
			row = append(row, formatScore(x))
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("%s: %w", out, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if tmp == nil {
		return nil
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
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
