package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/internal/cudadrv"
	"github.com/esm2go/esm2go/output"
	"github.com/spf13/pflag"
)

// contactsFlags are the contacts command's flags.
type contactsFlags struct {
	model      string
	out        string
	png        string
	dtype      string
	truncation int
	device     string
	precision  string
	threads    int
	overwrite  bool
	quiet      bool
}

// maxContactResidues bounds a contact map without truncation
// (--truncation-seq-length -1): L² float32 values of 20,000 residues are
// 1.6 GB, plus the attention maps of a few heads.
const maxContactResidues = 20000

// The files of a contacts output directory.
const (
	contactsValues  = "contacts.npy"         // (Σ L²,) <f4 or <f2: each record's L×L map, row-major, concatenated
	contactsOffsets = "contacts.offsets.npy" // (records+1,) <i8: record i is values[off[i]:off[i+1]]
	contactsRecords = "records.tsv"
	contactsMeta    = "metadata.json"
)

// contactsFiles are the files a contacts output directory holds.
var contactsFiles = map[string]bool{contactsValues: true, contactsOffsets: true, contactsRecords: true, contactsMeta: true}

func newContactsFlagSet(f *contactsFlags) *pflag.FlagSet {
	fs := newFlagSet("contacts")
	fs.StringVar(&f.model, "model", defaultModel, "model: Hugging Face id, directory (config.json + model.safetensors) or fair-esm .pt; it must carry the contact head (contact_head.regression)")
	fs.StringVarP(&f.out, "out", "o", "", "output directory (created; holds contacts.npy, contacts.offsets.npy, records.tsv, metadata.json) (required)")
	fs.StringVar(&f.png, "png", "", "also write one PNG heat map per record into this directory (files of the same names are replaced)")
	fs.StringVar(&f.dtype, "dtype", "float32", "stored value type: float32 or float16")
	fs.IntVar(&f.truncation, "truncation-seq-length", esm.DefaultMaxResidues, fmt.Sprintf("keep the first N residues of longer sequences; -1 = no truncation (at most %d residues)", maxContactResidues))
	fs.StringVar(&f.device, "device", "auto", "auto, cpu, cuda or cuda:N (auto: GPU 0 when usable, else the CPU; one device)")
	fs.StringVar(&f.precision, "precision", "fp32", "GPU compute precision: fp32, fp16 or bf16 (the CPU always uses fp32)")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace an existing --out directory (one this command wrote)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print warnings and errors only")
	return fs
}

func contactsUsage() string {
	var f contactsFlags
	return "Usage: esm2go contacts [flags] --out DIR FASTA...\n\n" +
		"Predicts residue-residue contact maps with the model's contact head, as fair-esm's and\n" +
		"Hugging Face's predict_contacts do: every layer's attention maps, BOS/EOS removed,\n" +
		"symmetrized, average-product corrected, the checkpoint's logistic regression, a sigmoid.\n" +
		"One L×L map of probabilities per record, in input order. See docs/CONTACTS.md.\n\nFlags:\n" +
		flagDefaults(newContactsFlagSet(&f))
}

func cmdContacts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f contactsFlags
	fs := newContactsFlagSet(&f)
	usage := contactsUsage()
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	bad := func(format string, a ...any) error { return usageErrorf(usage, format, a...) }
	inputs := fs.Args()
	switch {
	case len(inputs) == 0:
		return bad("no FASTA input given")
	case f.out == "":
		return bad("--out is required")
	case f.truncation == 0 || f.truncation < -1:
		return bad("invalid --truncation-seq-length %d (want a positive number of residues, or -1 for none)", f.truncation)
	case f.truncation > maxContactResidues:
		return bad("invalid --truncation-seq-length %d (contact maps hold at most %d residues)", f.truncation, maxContactResidues)
	case f.threads < 0:
		return bad("invalid --threads %d (want >= 0; 0 = all cores)", f.threads)
	}
	dtype, err := output.ParseDType(f.dtype)
	if err != nil || dtype == output.BFloat16 {
		return bad("invalid --dtype %q (want float32 or float16)", cutFlag(f.dtype))
	}
	dev, err := parseDevice(f.device)
	if err != nil {
		return bad("%v", err)
	}
	if dev.all || len(dev.ords) > 1 {
		return bad("--device %s: contacts runs on one device (cuda:N)", dev.raw)
	}
	precision, err := parsePrecision(f.precision)
	if err != nil {
		return bad("%v", err)
	}
	if err := checkContactsOut(f.out, f.overwrite); err != nil {
		return err
	}
	if f.png != "" && within(f.png, f.out) {
		return fmt.Errorf("--png %s is -o %s or inside it (the output directory is replaced as a whole when complete): write the PNGs beside it", f.png, f.out)
	}
	note := func(format string, a ...any) {
		if !f.quiet {
			fmt.Fprintf(stderr, "esm2go: "+format+"\n", a...)
		}
	}

	var dlProgress io.Writer
	if !f.quiet {
		dlProgress = stderr
	}
	ck, cfg, err := openModel(ctx, f.model, dlProgress)
	if err != nil {
		return err
	}
	defer ck.Close()
	if _, ok := ck.Tensors[esm.ContactWeightName]; !ok {
		hint := "the released ESM2 checkpoints do"
		if strings.HasSuffix(f.model, ".pt") {
			hint = "for a fair-esm .pt, its regression is read from " + cutFlag(strings.TrimSuffix(filepath.Base(f.model), ".pt")) + "-contact-regression.pt beside it"
		}
		return fmt.Errorf("model %s has no contact head (%s): contact prediction needs a checkpoint that carries it (%s)", cutFlag(f.model), esm.ContactWeightName, hint)
	}
	ords, prec, err := oneDevice(dev, precision, fs.Changed("precision"), f.threads, func(s string) { note("%s", s) })
	if err != nil {
		return err
	}
	d := devices(cfg, esm.CheckpointSource{C: ck}, ords, prec, f.threads, nil)[0]
	if f.png != "" {
		if err := os.MkdirAll(f.png, 0o755); err != nil {
			return fmt.Errorf("--png: %w", err)
		}
	}

	for _, p := range removeStalePartials(f.out) {
		note("removed %s, left by a run that was stopped", p)
	}
	w, err := newContactsWriter(f.out, dtype)
	if err != nil {
		return err
	}
	defer w.abort()
	start := time.Now()
	var backend string
	n, err := onDevice(d.Open, d.Close, func(m *esm.Model) (int, error) {
		backend = m.Backend().Name()
		note("model %s on %s, %s", f.model, backend, prec)
		return predictContacts(ctx, m, inputs, f.truncation, w, f.png, func(i int, id string, L int) {
			if !f.quiet && (i < 10 || i%100 == 0) {
				note("record %d %s: %d residues, %s", i, data.Quote(id), L, time.Since(start).Round(time.Millisecond))
			}
		})
	})
	if err != nil {
		if errors.Is(err, esm.ErrOutOfMemory) {
			err = fmt.Errorf("%w (a smaller --truncation-seq-length needs less memory)", err)
		}
		return err
	}
	meta := map[string]any{
		"format":                "esm2go-contacts",
		"format_version":        1,
		"esm2go_version":        Version(),
		"model":                 f.model,
		"layers":                cfg.Layers,
		"heads":                 cfg.Heads,
		"dtype":                 string(dtype),
		"truncation_seq_length": f.truncation,
		"records":               n,
		"values":                w.values,
		"backend":               backend,
		"precision":             string(prec),
		"files": map[string]string{
			contactsValues:  "every record's L×L contact probabilities, row-major, concatenated (1-D)",
			contactsOffsets: "int64, records+1: record i is contacts[offsets[i]:offsets[i+1]], reshaped (L, L)",
			contactsRecords: "index, id, residues (of the record, a <mask> counting 1), length (L: residues kept after truncation), truncated",
		},
	}
	if err := w.finish(meta, f.overwrite); err != nil {
		return err
	}
	note("wrote %d contact maps to %s in %s", n, f.out, time.Since(start).Round(time.Millisecond))
	return nil
}

// checkContactsOut refuses an existing --out unless overwrite (then it
// must be a directory this command wrote: it has metadata.json).
func checkContactsOut(out string, overwrite bool) error {
	fi, err := os.Stat(out)
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(filepath.Dir(filepath.Clean(out))); derr != nil {
			return fmt.Errorf("--out %s: %w", out, derr)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	switch {
	case !overwrite:
		return fmt.Errorf("--out %s exists (use --overwrite to replace it)", out)
	case !fi.IsDir():
		return fmt.Errorf("--out %s exists and is not a directory", out)
	}
	return contactsOutput(out)
}

// contactsOutput says whether dir is provably an output of this command,
// the only kind of directory --overwrite replaces: its metadata.json names
// the esm2go-contacts format and it holds nothing but the command's files.
func contactsOutput(dir string) error {
	var b []byte
	f, err := os.Open(filepath.Join(dir, contactsMeta))
	if err == nil {
		b, err = io.ReadAll(io.LimitReader(f, 1<<20+1)) // ours are a few hundred bytes
		f.Close()
	}
	var meta struct{ Format string }
	if err != nil || len(b) > 1<<20 || json.Unmarshal(b, &meta) != nil || meta.Format != "esm2go-contacts" {
		return fmt.Errorf("--out %s is not a contacts output (no %s naming esm2go-contacts); not replacing it", dir, contactsMeta)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	for _, e := range entries {
		if !contactsFiles[e.Name()] {
			return fmt.Errorf("--out %s holds %s, which contacts did not write; not replacing it", dir, data.Quote(e.Name()))
		}
	}
	return nil
}

// removeContactsOutput removes a contacts output checked again by
// contactsOutput: its files one by one, then the directory, which fails
// rather than delete anything that appeared in it since.
func removeContactsOutput(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // nothing to replace
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("--out %s is not a directory (a link or a file appeared there); not replacing it", dir)
	}
	if err := contactsOutput(dir); err != nil {
		return err
	}
	for _, name := range []string{contactsValues, contactsOffsets, contactsRecords, contactsMeta} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Remove(dir)
}

// predictContacts reads the records of inputs in order and writes each
// one's contact map to w (and a PNG into pngDir when set). A record that
// cannot be tokenized is an error naming its file, line and id.
func predictContacts(ctx context.Context, m *esm.Model, inputs []string, truncation int, w *contactsWriter, pngDir string,
	progress func(i int, id string, L int)) (int, error) {
	limit := truncation
	if limit < 0 {
		limit = maxContactResidues + 1 // longer records are refused below
	}
	rd, err := data.Open(ctx, inputs, data.Options{Workers: 1, MaxResidues: 6*limit + 6}) // "<mask>" is 6 bytes, 1 token
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	tok := esm.NewTokenizer(limit)
	var (
		b   esm.Batch
		ids []int32
		n   int
	)
	for {
		blk, err := rd.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		for _, r := range blk.Records {
			where := fmt.Sprintf("%s:%d: record %s", r.Source, r.Line, data.Quote(r.ID))
			if r.Problem != "" {
				return n, fmt.Errorf("%s: %s", where, r.Problem)
			}
			seq := r.Seq
			if r.Truncated() { // cut by the reader: drop a partial "<mask>" at the cut
				if i := bytes.LastIndexByte(seq, '<'); i >= 0 && bytes.IndexByte(seq[i:], '>') < 0 {
					seq = seq[:i]
				}
			}
			var enc esm.Encoded
			ids, enc, err = tok.Encode(ids[:0], seq)
			if err != nil {
				return n, fmt.Errorf("%s: %w", where, err)
			}
			if truncation < 0 && (enc.Truncated || r.Truncated()) {
				return n, fmt.Errorf("%s: more than %d residues, too long for a contact map without truncation (set --truncation-seq-length)", where, maxContactResidues)
			}
			b.Reset()
			b.Append(ids, enc.Masks)
			maps, err := m.Contacts(ctx, &b)
			if err != nil {
				return n, fmt.Errorf("%s: %w", where, err)
			}
			L := enc.Kept
			// Residues of the record: the tokens read, plus the bytes the
			// reader skipped of a record far over the limit.
			residues := int64(enc.Residues) + r.Total - int64(len(r.Seq))
			if err := w.add(n, r.ID, residues, L, enc.Truncated || r.Truncated(), maps[0]); err != nil {
				return n, err
			}
			if pngDir != "" {
				if err := writeContactPNG(filepath.Join(pngDir, pngName(n, r.ID)), maps[0], L); err != nil {
					return n, fmt.Errorf("%s: %w", where, err)
				}
			}
			if progress != nil {
				progress(n, r.ID, L)
			}
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: no FASTA records", strings.Join(inputs, ", "))
	}
	return n, nil
}

// contactsWriter writes a contacts output directory: into a temporary
// sibling directory first, renamed to its name by finish, so the output
// appears whole or not at all.
type contactsWriter struct {
	dir, tmp string
	dtype    output.DType
	f        *os.File
	bw       *bufio.Writer
	rec      *bufio.Writer
	recFile  *os.File
	offsets  []int64
	values   int64
	buf      []byte
}

// npyHeaderBytes is the fixed header size of the .npy files written here
// (magic, version, length, the dict padded to a multiple of 64).
const npyHeaderBytes = 128

func npyHeader(descr string, n int64) []byte {
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }", descr, n)
	h := make([]byte, npyHeaderBytes)
	copy(h, "\x93NUMPY\x01\x00")
	binary.LittleEndian.PutUint16(h[8:], npyHeaderBytes-10)
	copy(h[10:], dict)
	for i := 10 + len(dict); i < npyHeaderBytes-1; i++ {
		h[i] = ' '
	}
	h[npyHeaderBytes-1] = '\n'
	return h
}

func newContactsWriter(dir string, dtype output.DType) (*contactsWriter, error) {
	parent := filepath.Dir(filepath.Clean(dir))
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(filepath.Clean(dir))+".partial-")
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", dir, err)
	}
	w := &contactsWriter{dir: dir, tmp: tmp, dtype: dtype, offsets: []int64{0}}
	if w.f, err = os.Create(filepath.Join(tmp, contactsValues)); err == nil {
		err = lockTemp(w.f) // held while the run lives: a later run can tell it is not stale
	}
	if err == nil {
		w.bw = bufio.NewWriterSize(w.f, 1<<20)
		_, err = w.bw.Write(npyHeader(w.descr(), 0))
	}
	if err == nil {
		if w.recFile, err = os.Create(filepath.Join(tmp, contactsRecords)); err == nil {
			w.rec = bufio.NewWriter(w.recFile)
			_, err = w.rec.WriteString("index\tid\tresidues\tlength\ttruncated\n")
		}
	}
	if err != nil {
		w.abort()
		return nil, fmt.Errorf("--out %s: %w", dir, err)
	}
	return w, nil
}

func (w *contactsWriter) descr() string {
	if w.dtype == output.Float16 {
		return "<f2"
	}
	return "<f4"
}

// add appends record i's (L, L) map.
func (w *contactsWriter) add(i int, id string, residues int64, L int, truncated bool, c []float32) error {
	w.buf = w.buf[:0]
	for k, v := range c {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("record %d (%s): the contact map is %v at residues %d, %d: the model's attention is not finite (a damaged checkpoint, or an overflow in fp16/bf16: try --precision fp32); nothing was written",
				i, data.Quote(id), v, k/max(L, 1)+1, k%max(L, 1)+1)
		}
		if w.dtype == output.Float16 {
			w.buf = binary.LittleEndian.AppendUint16(w.buf, cudadrv.HalfBits(v))
		} else {
			w.buf = binary.LittleEndian.AppendUint32(w.buf, math.Float32bits(v))
		}
	}
	if _, err := w.bw.Write(w.buf); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(w.dir, contactsValues), err)
	}
	w.values += int64(len(c))
	w.offsets = append(w.offsets, w.values)
	clean := strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, id)
	if _, err := fmt.Fprintf(w.rec, "%d\t%s\t%d\t%d\t%t\n", i, clean, residues, L, truncated); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(w.dir, contactsRecords), err)
	}
	return nil
}

// finish writes the final headers, the offsets and meta, then moves the
// directory into place (replacing an old one when overwrite).
func (w *contactsWriter) finish(meta map[string]any, overwrite bool) error {
	fail := func(err error) error { return fmt.Errorf("writing --out %s: %w", w.dir, err) }
	if err := w.bw.Flush(); err != nil {
		return fail(err)
	}
	if _, err := w.f.WriteAt(npyHeader(w.descr(), w.values), 0); err != nil {
		return fail(err)
	}
	if err := w.f.Sync(); err != nil {
		return fail(err)
	}
	if err := w.f.Close(); err != nil {
		return fail(err)
	}
	w.f = nil
	if err := w.rec.Flush(); err != nil {
		return fail(err)
	}
	if err := w.recFile.Close(); err != nil {
		return fail(err)
	}
	w.recFile = nil
	off := npyHeader("<i8", int64(len(w.offsets)))
	for _, o := range w.offsets {
		off = binary.LittleEndian.AppendUint64(off, uint64(o))
	}
	if err := os.WriteFile(filepath.Join(w.tmp, contactsOffsets), off, 0o644); err != nil {
		return fail(err)
	}
	js, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(w.tmp, contactsMeta), append(js, '\n'), 0o644); err != nil {
		return fail(err)
	}
	if err := os.Chmod(w.tmp, 0o755); err != nil { // MkdirTemp made it 0700
		return fail(err)
	}
	if overwrite {
		if err := removeContactsOutput(w.dir); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(w.tmp, w.dir); err != nil {
		return fail(err)
	}
	w.tmp = ""
	return nil
}

// abort removes what an unfinished writer wrote (no-op after finish).
func (w *contactsWriter) abort() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if w.recFile != nil {
		w.recFile.Close()
		w.recFile = nil
	}
	if w.tmp != "" {
		os.RemoveAll(w.tmp)
		w.tmp = ""
	}
}

// pngName is record i's PNG file name: its index and its id with anything
// but letters, digits, '.', '_' and '-' replaced by '_', cut to 80 bytes.
func pngName(i int, id string) string {
	s := []byte(id)
	if len(s) > 80 {
		s = s[:80]
	}
	for k, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			s[k] = '_'
		}
	}
	name := strings.TrimLeft(string(s), ".")
	if name == "" {
		name = "record"
	}
	return strconv.Itoa(i) + "_" + name + ".png"
}

// writeContactPNG writes an (L, L) map as a grayscale heat map: white for
// probability 0, black for 1; each residue pair a square of max(1,
// 512/L) pixels so short proteins are not a speck.
func writeContactPNG(path string, c []float32, L int) error {
	scale := max(1, 512/L)
	side := L * scale
	img := image.NewGray(image.Rect(0, 0, side, side))
	for i := 0; i < L; i++ {
		for j := 0; j < L; j++ {
			v := float64(c[i*L+j])
			if !(v >= 0) { // NaN: drawn as 0
				v = 0
			}
			g := uint8(math.Round(255 * (1 - min(v, 1))))
			for y := i * scale; y < (i+1)*scale; y++ {
				row := img.Pix[y*img.Stride+j*scale : y*img.Stride+(j+1)*scale]
				for x := range row {
					row[x] = g
				}
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--png: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("--png %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--png %s: %w", path, err)
	}
	return nil
}
