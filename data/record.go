package data

import (
	"io"
	"time"
)

// Policy names the FASTA rules this package applies (see the package
// documentation for the full list); record it beside outputs so a change of
// rules is visible.
//
//   - header: a line whose first non-blank character is '>'; Header is the
//     rest, trimmed, valid UTF-8; ID its first blank-separated word (may be "").
//   - line endings LF, CRLF or lone CR; blank lines ignored.
//   - Seq: following lines up to the next header, all ASCII whitespace removed,
//     bytes otherwise kept as they are (no upper-casing, no validation).
//   - empty records are yielded with empty Seq; duplicate IDs are kept.
//   - text before the first header: one Record with Problem set.
//   - gzip by magic bytes; a truncated stream is an error naming the file.
const Policy = "esm2go-fasta/1"

// ProblemBeforeHeader is the Problem of the record holding the non-blank text
// found before the first header of a file.
const ProblemBeforeHeader = "sequence text before the first header"

// Record is one FASTA record as read, before any tokenization.
type Record struct {
	Source  string // file name as given ("-" for stdin)
	Line    int    // 1-based line of the header line; for a problem record, the line where it starts
	Index   int64  // 0-based position of the record in the whole input (all files in order, problem records included)
	ID      string // first blank-separated word of the header, valid UTF-8; may be ""
	Header  string // the whole header line after '>', trimmed, valid UTF-8
	Seq     []byte // residue bytes, whitespace removed, lines joined; not upper-cased or validated
	Problem string // non-empty when the record is unusable at the FASTA level; the consumer skips it
}

// Block is the records of one chunk of input, in input order. Seq slices
// point into memory owned by the block.
type Block struct {
	Records []Record
}

// Options configures a Reader. The zero value gives the defaults.
type Options struct {
	Workers      int                                      // reader goroutines, default 4
	Prefetch     int                                      // blocks queued per worker, default 4 (queue capacity = Workers*Prefetch)
	BlockBytes   int                                      // target bytes of FASTA per block, default 1 MiB
	StallTimeout time.Duration                            // a read that makes no progress for this long ends the run (0 = 2 min, <0 = none)
	Stdin        io.Reader                                // what "-" reads (default os.Stdin)
	Open         func(name string) (io.ReadCloser, error) // optional, for tests; default os.Open
}

const (
	defaultWorkers      = 4
	defaultPrefetch     = 4
	defaultBlockBytes   = 1 << 20
	defaultStallTimeout = 2 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.Prefetch <= 0 {
		o.Prefetch = defaultPrefetch
	}
	if o.BlockBytes <= 0 {
		o.BlockBytes = defaultBlockBytes
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = defaultStallTimeout
	}
	return o
}
