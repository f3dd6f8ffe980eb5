package output

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
)

// Format names an on-disk layout.
type Format string

const (
	Parquet Format = "parquet" // one .parquet file
	NPY     Format = "npy"     // a directory of .npy arrays plus records.tsv and metadata.json
)

// ParseFormat accepts "parquet" or "npy" (case-insensitive).
func ParseFormat(s string) (Format, error) {
	switch Format(strings.ToLower(strings.TrimSpace(s))) {
	case Parquet:
		return Parquet, nil
	case NPY:
		return NPY, nil
	}
	return "", fmt.Errorf("output: unknown format %q (want %q or %q)", s, Parquet, NPY)
}

// Kind says how many vectors a column holds per record.
type Kind int

const (
	Vector Kind = iota // one vector of Dim per record, e.g. mean_33, bos_33
	Matrix             // Length vectors of Dim per record, e.g. per_tok_33
)

func (k Kind) String() string {
	switch k {
	case Vector:
		return "vector"
	case Matrix:
		return "matrix"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Column is one embedding column of the output.
type Column struct {
	Name string
	Kind Kind
	Dim  int // D, the embedding width
}

// Schema describes the embedding columns and the free-form metadata stored
// with them (model name, esm2go version, options).
type Schema struct {
	Columns  []Column
	Metadata map[string]string
	// DType is how every embedding column's values are stored; the zero
	// value means Float32. Rows are float32 whatever it is.
	DType DType
}

// Row is one FASTA record's embeddings. Rows are written in input order.
type Row struct {
	ID        string
	Index     int64 // position in the input; strictly increasing across Write calls
	Length    int   // L, residues embedded (after truncation)
	Truncated bool
	Values    [][]float32 // one per Schema column, in order; Vector: (D,); Matrix: (L, D) row-major
}

// Writer receives rows in input order from one goroutine.
type Writer interface {
	// Write validates and appends r. It does not retain r or its slices.
	// A validation error leaves the writer usable; an I/O error does not.
	Write(r *Row) error
	// Close flushes, fsyncs and atomically publishes the output at its final
	// path. On error nothing is published and temporaries are removed.
	Close() error
	// Abort removes temporaries and leaves the final path untouched. It is a
	// no-op after Close, so `defer w.Abort()` is safe.
	Abort() error
}

// Options adjust Create.
type Options struct {
	// Overwrite allows replacing an existing output at the final path when
	// Close publishes, if it is replaceable (see Check). Without it an
	// existing path is an error.
	Overwrite bool
	// Keep lists files an output must never replace, whatever Overwrite
	// says: the run's inputs.
	Keep []string
	// Log receives notices about what earlier, killed runs left behind and
	// what was done with it; nil discards them.
	Log *slog.Logger
}

// metaKey is the reserved key-value metadata key describing the layout.
const metaKey = "esm2go.output"

// layoutVersion is bumped whenever either on-disk layout changes. Outputs
// stored as float32 are still written as version 1 (unchanged since), so
// older readers keep reading them; other dtypes are version 2, which older
// readers refuse by its number instead of misreading the values.
const layoutVersion = 2

// layoutVersionOf is the layout version written for dtype d.
func layoutVersionOf(d DType) int {
	if d.orDefault() == Float32 {
		return 1
	}
	return 2
}

// reservedNames cannot be used as column names: they collide with the fixed
// parquet columns or the npy side files.
var reservedNames = map[string]bool{
	"id": true, "index": true, "length": true, "truncated": true,
	"records": true, "metadata": true,
}

// ErrExists is returned (wrapped) when the final path exists and
// Options.Overwrite is false.
var ErrExists = errors.New("output already exists")

// Create is CreateWithOptions with zero Options: an existing path is an error.
func Create(path string, format Format, schema Schema) (Writer, error) {
	return CreateWithOptions(path, format, schema, Options{})
}

// CreateWithOptions starts writing an output that Close publishes at path.
func CreateWithOptions(path string, format Format, schema Schema, opts Options) (Writer, error) {
	if err := schema.validate(); err != nil {
		return nil, fmt.Errorf("output: %s: %w", path, err)
	}
	path, err := cleanTarget(path)
	if err != nil {
		return nil, err
	}
	if format != Parquet && format != NPY {
		return nil, fmt.Errorf("output: %s: unknown format %q", path, format)
	}
	lock, err := acquireLock(path)
	if err != nil {
		return nil, err
	}
	cleanStale(path, opts.Log)
	if err := checkExisting(path, opts); err != nil {
		lock.release()
		return nil, err
	}
	own := owner{final: path, opts: opts, lock: lock}
	var w Writer
	if format == Parquet {
		w, err = newParquetWriter(own, schema)
	} else {
		w, err = newNPYWriter(own, schema)
	}
	if err != nil {
		lock.release()
		return nil, err
	}
	return w, nil
}

// owner is what both writers share: the final path, the options and the
// lock that makes this run the output's only writer.
type owner struct {
	final string
	opts  Options
	lock  *outputLock
}

// publish publishes tmp at the final path.
func (o *owner) publish(tmp string) error { return publish(tmp, o.final, o.opts) }

// done releases the output for other runs.
func (o *owner) done() { o.lock.release() }

func (s *Schema) validate() error {
	seen := make(map[string]bool, len(s.Columns))
	for i, c := range s.Columns {
		if !validName(c.Name) {
			return fmt.Errorf("column %d: invalid name %q (want [A-Za-z0-9_-]+)", i, c.Name)
		}
		if reservedNames[c.Name] {
			return fmt.Errorf("column %d: name %q is reserved", i, c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("column %d: duplicate name %q", i, c.Name)
		}
		seen[c.Name] = true
		if c.Kind != Vector && c.Kind != Matrix {
			return fmt.Errorf("column %q: invalid kind %d", c.Name, int(c.Kind))
		}
		if c.Dim <= 0 {
			return fmt.Errorf("column %q: dim %d must be positive", c.Name, c.Dim)
		}
	}
	if _, ok := s.Metadata[metaKey]; ok {
		return fmt.Errorf("metadata key %q is reserved", metaKey)
	}
	if !s.DType.valid() {
		return fmt.Errorf("unknown dtype %s (want %s, %s or %s)", quote(string(s.DType)), Float32, Float16, BFloat16)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		ok := r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// rowChecker validates rows against a schema; it is shared by both writers.
type rowChecker struct {
	cols      []Column
	dtype     DType // values must be representable in it
	lastIndex int64
	started   bool
}

func (c *rowChecker) check(r *Row) error {
	if r == nil {
		return errors.New("output: nil row")
	}
	if r.Index < 0 {
		return fmt.Errorf("output: record %q: negative index %d", r.ID, r.Index)
	}
	if c.started && r.Index <= c.lastIndex {
		return fmt.Errorf("output: record %q: index %d not after previous index %d (rows must be in input order)", r.ID, r.Index, c.lastIndex)
	}
	if r.Length < 0 {
		return fmt.Errorf("output: record %q: negative length %d", r.ID, r.Length)
	}
	if len(r.Values) != len(c.cols) {
		return fmt.Errorf("output: record %q: %d value columns, schema has %d", r.ID, len(r.Values), len(c.cols))
	}
	for i, col := range c.cols {
		want := col.Dim
		shape := fmt.Sprintf("(%d,)", col.Dim)
		if col.Kind == Matrix {
			want = r.Length * col.Dim
			shape = fmt.Sprintf("(%d, %d)", r.Length, col.Dim)
		}
		if got := len(r.Values[i]); got != want {
			return fmt.Errorf("output: record %q column %q: %d values, want %d for shape %s", r.ID, col.Name, got, want, shape)
		}
	}
	for i, col := range c.cols {
		// One pass finds the first value either check refuses (split
		// over the CPUs for a large row, fast_parallel.go); only a row
		// that fails scans again, for the error.
		if firstBad(r.Values[i], c.dtype) < 0 {
			continue
		}
		if j := firstNonFinite(r.Values[i]); j >= 0 {
			where := fmt.Sprintf("element %d", j)
			if col.Kind == Matrix {
				where = fmt.Sprintf("residue %d, element %d", j/col.Dim+1, j%col.Dim)
			}
			return fmt.Errorf("output: record %d (%s) column %s: %w: %v at %s", r.Index, quote(r.ID), col.Name, ErrNonFinite, r.Values[i][j], where)
		}
		if j := c.dtype.firstOutOfRange(r.Values[i]); j >= 0 {
			return fmt.Errorf("output: record %d (%s) column %s: %w: %v at %s rounds to ±Inf in %s; write float32 or bfloat16 instead",
				r.Index, quote(r.ID), col.Name, ErrOutOfRange, r.Values[i][j], elementAt(col, j), c.dtype.rangeName())
		}
	}
	return nil
}

// elementAt names value j of a column's values in errors.
func elementAt(col Column, j int) string {
	if col.Kind == Matrix {
		return fmt.Sprintf("residue %d, element %d", j/col.Dim+1, j%col.Dim)
	}
	return fmt.Sprintf("element %d", j)
}

// ErrNonFinite is returned (wrapped) by Write for a row holding NaN or ±Inf:
// an output never holds a silent non-finite embedding.
var ErrNonFinite = errors.New("non-finite value")

// firstNonFinite returns the index of the first NaN or ±Inf in v, or -1.
// It tests the exponent bits of 8 values per step (an all-ones exponent is
// NaN or Inf); on a 2-core dev box it scans at memory speed.
func firstNonFinite(v []float32) int {
	const exp = 0x7f800000
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8 : i+8]
		if math.Float32bits(w[0])&exp == exp || math.Float32bits(w[1])&exp == exp ||
			math.Float32bits(w[2])&exp == exp || math.Float32bits(w[3])&exp == exp ||
			math.Float32bits(w[4])&exp == exp || math.Float32bits(w[5])&exp == exp ||
			math.Float32bits(w[6])&exp == exp || math.Float32bits(w[7])&exp == exp {
			break
		}
	}
	for ; i < len(v); i++ {
		if math.Float32bits(v[i])&exp == exp {
			return i
		}
	}
	return -1
}

// accept records r as written; call only after the write succeeded.
func (c *rowChecker) accept(r *Row) {
	c.lastIndex = r.Index
	c.started = true
}

// sanitizeID makes an ID safe for one TSV field and valid UTF-8.
func sanitizeID(id string) string {
	id = strings.ToValidUTF8(id, "\uFFFD")
	if strings.ContainsAny(id, "\t\n\r") {
		id = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, id)
	}
	return id
}

// columnMeta is the JSON description of one column in both layouts.
type columnMeta struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Dim     int    `json:"dim"`
	File    string `json:"file,omitempty"`    // npy only
	Offsets string `json:"offsets,omitempty"` // npy only, Matrix columns
}

func columnsMeta(cols []Column, npy bool) []columnMeta {
	out := make([]columnMeta, len(cols))
	for i, c := range cols {
		out[i] = columnMeta{Name: c.Name, Kind: c.Kind.String(), Dim: c.Dim}
		if npy {
			out[i].File = c.Name + ".npy"
			if c.Kind == Matrix {
				out[i].Offsets = c.Name + ".offsets.npy"
			}
		}
	}
	return out
}
