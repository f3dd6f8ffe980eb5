package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
	"github.com/esm2go/esm2go/weights"
	"github.com/spf13/pflag"
)

// embedFlags are the embed command's flags, named after fair-esm's
// scripts/extract.py where they mean the same.
type embedFlags struct {
	model      string
	out        string
	format     string
	dtype      string
	include    []string
	layers     []int
	truncation int
	toks       int
	device     string
	precision  string
	workers    int
	prefetch   int
	strict     bool
	overwrite  bool
	threads    int
	quiet      bool
	logFormat  string

	metricsJSON   string
	metricsAppend bool // set by checkOutputs: a resumed run appends to its metrics file
	metricsAddr   string
	metricsEvery  int

	commitRows  int64
	commitEvery time.Duration
	shard       string

	window        int // --window: residues per window, 0 = off (window.go)
	windowOverlap int
}

func newEmbedFlagSet(f *embedFlags) *pflag.FlagSet {
	fs := newFlagSet("embed")
	fs.StringVar(&f.model, "model", defaultModel, "model: Hugging Face id, directory (config.json + model.safetensors) or fair-esm .pt")
	fs.StringVarP(&f.out, "out", "o", "", "output: a .parquet file, or a directory for npy (required)")
	fs.StringVar(&f.format, "format", "parquet", "output format: parquet or npy; when not given, from --out: a name ending in .npy or / means npy, anything else parquet")
	fs.StringVar(&f.dtype, "dtype", "float32", "how embedding values are stored: float32, float16 (half the bytes; a value beyond ±65504 stops the run) or bfloat16 (half the bytes, float32's range, 8 significant bits)")
	fs.StringSliceVar(&f.include, "include", []string{"mean"}, "what to write per record: mean, bos, per_tok (comma list)")
	fs.IntSliceVar(&f.layers, "repr-layers", []int{-1}, "layers to write: 0 = embeddings, L = last, negative counts from the end (comma list or repeated)")
	fs.IntVar(&f.truncation, "truncation-seq-length", esm.DefaultMaxResidues, "keep the first N residues of longer sequences; -1 = no truncation")
	fs.IntVar(&f.toks, "toks-per-batch", 0, "tokens per packed batch (no padding); 0 = auto: 4096 on the CPU, from free GPU memory (at most 65536) on a GPU")
	fs.StringVar(&f.device, "device", "auto", "auto, cpu, cuda, cuda:N, cuda:N,M,... or cuda:all (auto: GPU 0 when usable, else the CPU; several GPUs share one run)")
	fs.StringVar(&f.precision, "precision", "fp16", "GPU compute precision: fp16, bf16 or fp32 (the CPU always uses fp32)")
	fs.IntVar(&f.workers, "workers", 4, "FASTA reader goroutines")
	fs.IntVar(&f.prefetch, "prefetch", 4, "FASTA blocks queued per reader")
	fs.BoolVar(&f.strict, "strict", false, "stop at the first record that cannot be embedded instead of skipping it")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace an existing output (a file, or a directory esm2go wrote) and an existing --metrics-json file, and start over instead of resuming an earlier run's OUT.parts")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print warnings and errors only")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&f.metricsJSON, "metrics-json", "", "write run metrics to FILE, one JSON object per line per window (an existing FILE needs --overwrite)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve run metrics in Prometheus text format at http://ADDR/metrics and a live page plotting them at http://ADDR/, e.g. 127.0.0.1:9100; a host other than loopback (\":9100\", \"0.0.0.0:9100\") exposes them to the network")
	fs.StringVar(&f.shard, "shard", "", "embed only part i of N of the input (i/N, 0-based), or auto: the Slurm array task or Kubernetes indexed-job index; join the parts with esm2go merge")
	fs.Int64Var(&f.commitRows, "commit-rows", 100_000, "commit the rows written so far (fsynced: a killed run resumes after them) every N rows, or every --commit-every, whichever comes first")
	fs.DurationVar(&f.commitEvery, "commit-every", 2*time.Minute, "commit the rows written so far at least this often (see --commit-rows)")
	fs.IntVar(&f.metricsEvery, "metrics-every", 10, "batches per metrics window (the live window line on a terminal or a progress record in a log, a --metrics-json line, a Prometheus update)")
	addWindowFlags(fs, f)
	return fs
}

func embedUsage() string {
	var f embedFlags
	return "Usage: esm2go embed [flags] FASTA...\n\n" +
		"Embeds every record of the FASTA files (plain or gzip; \"-\" reads stdin) into one output,\n" +
		"one row per record in input order.\n\nFlags:\n" + flagDefaults(newEmbedFlagSet(&f))
}

// parseInclude turns --include values into the one representation set
// (esm.ParseRepr).
func parseInclude(vals []string) (esm.Repr, error) {
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(s), "contacts") {
				return 0, errors.New("invalid --include \"contacts\": contact maps are not supported (want mean, bos or per_tok)")
			}
		}
	}
	r, err := esm.ParseRepr(vals)
	if err != nil {
		return 0, fmt.Errorf("invalid --include: %w", err)
	}
	return r, nil
}

// resolveLayers checks --repr-layers against the model (esm's one owner of
// layer lists) and returns the absolute layers, each once.
func resolveLayers(cfg esm.Config, vals []int) ([]int, error) {
	if len(vals) == 0 {
		return nil, errors.New("--repr-layers is empty")
	}
	abs, err := cfg.ResolveLayers(vals)
	if err != nil {
		return nil, fmt.Errorf("--repr-layers: %w", err)
	}
	return abs, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func cmdEmbed(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var f embedFlags
	defer func() { err = asJSONLog(err, f.logFormat == "json") }() // run prints it as JSON
	fs := newEmbedFlagSet(&f)
	usage := embedUsage()
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	bad := func(format string, a ...any) error { return usageErrorf(usage, format, a...) }

	// Everything that can be checked without the model, first.
	inputs := fs.Args()
	if len(inputs) == 0 {
		return bad("no FASTA input given")
	}
	if f.out == "" {
		return bad("--out is required")
	}
	format, err := embedOutput(&f, fs.Changed("format")) // a sharded run into a directory writes its part there
	if err != nil {
		return bad("%v", err)
	}
	dtype, err := output.ParseDType(f.dtype)
	if err != nil {
		return bad("invalid --dtype %q (want float32, float16 or bfloat16)", f.dtype)
	}
	inc, err := parseInclude(f.include)
	if err != nil {
		return bad("%v", err)
	}
	dev, err := parseDevice(f.device)
	if err != nil {
		return bad("%v", err)
	}
	precision, err := parsePrecision(f.precision)
	if err != nil {
		return bad("%v", err)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return bad("invalid --log-format %q (want text or json)", f.logFormat)
	}
	windowing, err := windowPolicy(&f, fs.Changed("truncation-seq-length"))
	if err != nil {
		return bad("%v", err)
	}
	switch {
	case f.truncation == 0 || f.truncation < -1:
		return bad("invalid --truncation-seq-length %d (want a positive number of residues, or -1 for none)", f.truncation)
	case f.toks < 0:
		return bad("invalid --toks-per-batch %d (want > 0, or 0 for auto)", f.toks)
	case f.toks > 0 && f.truncation > 0 && f.toks < f.truncation+2:
		return bad("--toks-per-batch %d cannot hold one sequence of --truncation-seq-length %d plus BOS/EOS", f.toks, f.truncation)
	case f.workers <= 0:
		return bad("invalid --workers %d (want > 0)", f.workers)
	case f.prefetch <= 0:
		return bad("invalid --prefetch %d (want > 0)", f.prefetch)
	case f.threads < 0:
		return bad("invalid --threads %d (want >= 0; 0 = all cores)", f.threads)
	case f.metricsEvery <= 0:
		return bad("invalid --metrics-every %d (want > 0)", f.metricsEvery)
	}
	if len(f.layers) == 0 {
		return bad("--repr-layers is empty")
	}
	if err := checkInputs(inputs); err != nil {
		return err
	}
	shard, err := parseShard(f.shard, os.Getenv)
	if err != nil {
		return bad("%v", err)
	}
	if err := checkOutputs(&f, inputs); err != nil {
		return err
	}

	// Logging and progress.
	lw := newDisplay(stderr, f.quiet, f.logFormat == "json") // the logger writes through it (progress.go)
	level := slog.LevelInfo
	if f.quiet {
		level = slog.LevelWarn
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if f.logFormat == "json" {
		log = slog.New(slog.NewJSONHandler(lw, hopts))
	} else {
		log = slog.New(slog.NewTextHandler(lw, hopts))
	}
	log = lw.attach(log)

	if err := scanInputs(ctx, inputs, f.truncation, log); err != nil {
		return err
	}
	_, statErr := os.Lstat(f.out)
	outExisted := statErr == nil

	// Model.
	loadStart := time.Now()
	var dlProgress io.Writer
	if !f.quiet {
		dlProgress = lw.downloadWriter() // the weights package draws a bar when this is a terminal
	}
	ck, cfg, err := openModel(ctx, f.model, dlProgress)
	if err != nil {
		return err
	}
	defer ck.Close()
	absLayers, err := resolveLayers(cfg, f.layers)
	if err != nil {
		return bad("%v", err)
	}
	if f.truncation < 0 && !windowing.On() && !f.quiet {
		log.Warn("truncation disabled: sequences longer than 1022 residues exceed the 1024 positions ESM2 was trained on")
	}

	note := func(msg string) { // plain on a text log, a log line in json
		if f.quiet {
			return
		}
		if f.logFormat == "json" {
			log.Info(msg)
		} else {
			fmt.Fprintf(lw, "esm2go: %s\n", msg)
		}
	}
	ords, prec, err := resolveDevices(dev, precision, fs.Changed("precision"), note, func(perr error) {
		if msg, warn := noGPUNote(perr, f.threads); warn {
			log.Warn(msg)
		} else {
			note(msg)
		}
	})
	if err != nil {
		return err
	}

	trunc := f.truncation
	truncMeta := strconv.Itoa(trunc)
	if trunc < 0 {
		truncMeta = "none"
	}
	fpStart := time.Now()
	modelID, err := weights.FingerprintCached(ctx, ck.Path, fingerprintCacheDir())
	if err != nil {
		return err
	}
	fpTime := time.Since(fpStart)
	// Everything that changes the values written, and the input: a later
	// run resumes this one's committed rows only if all of it is equal.
	noResume := false
	identity := map[string]string{
		"model":                 modelID,
		"layers":                joinInts(absLayers),
		"include":               inc.String(),
		"truncation_seq_length": truncMeta,
		"precision":             string(prec),
	}
	if shard.Count > 0 {
		identity["shard"] = shard.String()
	}
	if in, ok := inputFingerprint(inputs); ok {
		identity["input"] = in
	} else {
		// Standard input cannot be read twice: nothing can resume such a
		// run, so its identity never matches another's.
		identity["input"] = fmt.Sprintf("stdin (pid %d, %s)", os.Getpid(), time.Now().Format(time.RFC3339Nano))
		noResume = true
	}
	opts := embed.Options{
		Inputs:       inputs,
		Out:          f.out,
		Format:       format,
		DType:        dtype,
		Overwrite:    f.overwrite,
		Identity:     identity,
		NoResume:     noResume,
		ChunkRows:    f.commitRows,
		ChunkEvery:   f.commitEvery,
		Include:      inc,
		Layers:       absLayers,
		MaxResidues:  trunc,
		Windowing:    windowing,
		ToksPerBatch: f.toks,
		Workers:      f.workers,
		Prefetch:     f.prefetch,
		Strict:       f.strict,
		Shard:        data.Shard{Index: shard.Index, Count: shard.Count},
		Log:          log,
		Metadata: map[string]string{
			"model":                 f.model,
			"model_path":            ck.Path,
			"model_format":          ck.Format,
			"model_fingerprint":     modelID,
			"esm2go_version":        Version(),
			"layers":                joinInts(absLayers),
			"include":               inc.String(),
			"truncation_seq_length": truncMeta,
			"device":                dev.String(),
			"precision":             string(prec),
		},
	}
	if shard.Count > 0 {
		opts.Metadata[metaShard] = shard.String()
		// merge compares it: shards of one run read the same input
		// (copies staged on each node have its size too).
		opts.Metadata[metaInputBytes] = strconv.FormatInt(inputBytes(inputs), 10)
		log.Info("sharded run", "shard", shard.String(), "from", shard.From)
	}
	mon, err := startMonitor(ctx, &f, ords, lw, log)
	if err != nil {
		return err
	}
	defer mon.Close()
	mon.SetSettings(pageSettings(&f, ck.Path, absLayers, inc, dev, ords, prec, inputs))
	lw.watch(&opts, mon) // GPU utilization counts from the compute start, after the devices load
	loaded := func(name, backend string) {
		log.Info("model loaded", "device", name, "model", f.model, "path", ck.Path, "layers", cfg.Layers, "dim", cfg.Dim,
			"backend", backend, "load_time", time.Since(loadStart).Round(time.Millisecond).String(),
			"fingerprint_time", fpTime.Round(time.Millisecond).String(),
			"repr_layers", joinInts(absLayers), "include", inc.String())
	}
	devs := devices(cfg, esm.CheckpointSource{C: ck}, ords, prec, f.threads, loaded)
	sum, err := embed.RunDevices(ctx, cfg, devs, opts)
	if err != nil && sum != nil {
		mon.Observe(sum, true) // RunDevices reports the final totals on success only
	}
	rep, merr := mon.Close()
	lw.finish()
	if merr != nil {
		log.Warn("metrics file", "err", merr)
	}
	lw.metrics(rep)
	if err != nil {
		return withOverwriteHint(err)
	}
	if sum.Complete {
		note(fmt.Sprintf("%s is already complete (written by a run with the same model, options and input); nothing to do (--overwrite recomputes it)", f.out))
		return nil
	}
	if err := checkEmbedded(sum, f.out, outExisted, shard.Count > 0, log); err != nil {
		return err
	}
	lw.summary(sum, f.out)
	return nil
}

// outputFormat decides the output format: --format when given (refusing an
// --out whose extension says the other format), else from --out's name.
func outputFormat(flag string, given bool, out string) (output.Format, error) {
	ext := strings.ToLower(filepath.Ext(strings.TrimRight(out, "/")))
	byName := output.Parquet
	if ext == ".npy" || strings.HasSuffix(out, "/") {
		byName = output.NPY
	}
	if !given {
		return byName, nil
	}
	format, err := output.ParseFormat(flag)
	if err != nil {
		return "", fmt.Errorf("invalid --format %q (want parquet or npy)", flag)
	}
	if (format == output.NPY && ext == ".parquet") || (format == output.Parquet && byName == output.NPY) {
		return "", fmt.Errorf("--format %s contradicts --out %s (a %s name): change one of them", format, out, byName)
	}
	return format, nil
}

// checkOutputs fails before the model loads when the run could not publish
// its output (output.Check: exists, not replaceable, locked by another run)
// or when --metrics-json would clobber a file or name the output or an
// input.
func checkOutputs(f *embedFlags, inputs []string) error {
	if f.out == "-" || f.metricsJSON == "-" {
		return errors.New("--out and --metrics-json name files: embed does not write to standard output (give a file name; ./- for a file named -)")
	}
	if err := checkOutputDir(f.out); err != nil {
		return err
	}
	var stdin fs.FileInfo
	if slices.Contains(inputs, "-") {
		stdin = stdinFile()
	}
	if sameAsStdin(f.out, stdin) {
		return fmt.Errorf("--out %s is the file on standard input, an input of this run", f.out)
	}
	keep := slices.DeleteFunc(slices.Clone(inputs), func(s string) bool { return s == "-" })
	if err := output.Check(f.out, output.Options{Overwrite: f.overwrite, Keep: keep}); err != nil {
		return withOverwriteHint(err)
	}
	if f.metricsJSON == "" {
		return nil
	}
	if sameAsStdin(f.metricsJSON, stdin) {
		return fmt.Errorf("--metrics-json %s is the file on standard input, an input of this run", f.metricsJSON)
	}
	if within(f.metricsJSON, f.out) {
		return fmt.Errorf("--metrics-json %s is --out %s or inside it; write the metrics beside the output", f.metricsJSON, f.out)
	}
	mi, err := os.Lstat(f.metricsJSON)
	if err != nil {
		return nil // created exclusively later (monitor.Options.Overwrite)
	}
	for _, p := range append([]string{f.out}, keep...) {
		if pi, err := os.Lstat(p); err == nil && os.SameFile(mi, pi) {
			return fmt.Errorf("--metrics-json %s is the same file as %s", f.metricsJSON, p)
		}
	}
	switch {
	case !f.overwrite && mi.Mode().IsRegular() && resumable(f.out):
		f.metricsAppend = true // the run resumes its parts: its metrics file goes on too
	case !f.overwrite:
		return fmt.Errorf("--metrics-json %s exists (use --overwrite to replace it)", f.metricsJSON)
	case !mi.Mode().IsRegular():
		return fmt.Errorf("--metrics-json %s is not a regular file; refusing to replace it", f.metricsJSON)
	}
	return nil
}

// withOverwriteHint adds the flag that would allow what output refused.
func withOverwriteHint(err error) error {
	switch {
	case errors.Is(err, output.ErrExists):
		return fmt.Errorf("%w (use --overwrite to replace it)", err)
	case errors.Is(err, output.ErrIncompatible) && strings.Contains(err.Error(), `input was "stdin (`):
		return fmt.Errorf("%w (that run read standard input, which cannot be resumed: --overwrite discards its rows)", err)
	case errors.Is(err, output.ErrIncompatible) && strings.Contains(err.Error(), "input was "):
		return fmt.Errorf("%w (inputs are compared by the paths, sizes and modification times of their files; --overwrite discards the earlier rows)", err)
	case errors.Is(err, output.ErrIncompatible):
		return fmt.Errorf("%w (--overwrite discards the earlier rows)", err)
	}
	return err
}

// resumable reports whether out has the parts directory of an earlier run
// (which this run resumes when its settings match, or refuses naming them).
func resumable(out string) bool {
	fi, err := os.Lstat(strings.TrimSuffix(out, "/") + output.PartsSuffix)
	return err == nil && fi.IsDir()
}

// metaInputBytes is the metadata key of a sharded run's total input size.
const metaInputBytes = "input_bytes"

// inputBytes is the total size of the input files (gzip files counted
// compressed); shards cannot read standard input.
func inputBytes(inputs []string) int64 {
	var n int64
	for _, in := range inputs {
		if st, err := os.Stat(in); err == nil {
			n += st.Size()
		}
	}
	return n
}
