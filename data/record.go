package data

import (
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// Policy names the FASTA rules this package applies (see the package
// documentation for the full list); record it beside outputs so a change of
// rules is visible.
//
//   - header: a line whose first non-blank character is '>'; Header is the
//     rest, trimmed, valid UTF-8, from at most MaxHeaderBytes bytes of the
//     line; ID its first word, words separated by blanks or Unicode white
//     space (may be "").
//   - line endings LF, CRLF or lone CR; blank lines ignored.
//   - Seq: following lines up to the next header, all ASCII whitespace removed,
//     bytes otherwise kept as they are (no upper-casing, no validation); with
//     Options.MaxResidues only the first MaxResidues of them, Total counting all.
//   - empty records are yielded with empty Seq; duplicate IDs are kept.
//   - text before the first header: one Record with Problem set, Seq holding
//     at most MaxPreambleBytes of it.
//   - gzip by magic bytes; a truncated stream is an error naming the file.
//
// esm2go-fasta/2 differs from /1 in the caps: headers longer than
// MaxHeaderBytes and text before the first header longer than
// MaxPreambleBytes are cut (Record.HeaderCut and Record.Total say by how
// much), and Options.MaxResidues cuts Seq. esm2go-fasta/3 differs from /2 in
// the ID only: Unicode white space (U+00A0 and the others unicode.IsSpace
// names) separates words as blanks do. esm2go-fasta/4 skips a UTF-8 byte
// order mark (EF BB BF) at the start of a file.
const Policy = "esm2go-fasta/4"

// MaxHeaderBytes is how many bytes of a header line (after '>' and the
// blanks that follow it) a Record keeps; HeaderCut counts the rest.
const MaxHeaderBytes = 64 << 10

// MaxPreambleBytes is how many residue bytes of the text before a file's
// first header its problem Record keeps in Seq; Total counts them all.
const MaxPreambleBytes = 1 << 10

// ProblemBeforeHeader is the Problem of the record holding the non-blank text
// found before the first header of a file.
const ProblemBeforeHeader = "sequence text before the first header"

// Record is one FASTA record as read, before any tokenization.
type Record struct {
	Source    string // file name as given ("-" for stdin)
	Line      int    // 1-based line of the header line; for a problem record, the line where it starts
	LineFrom  int64  // 0: Line counts from the file's start; else the byte where a shard's part of the file starts, Line counting from there (Reader.Line gives the line in the file)
	Index     int64  // 0-based position of the record in the whole input (all files in order, problem records included)
	ID        string // first word of the header (blanks and Unicode white space separate words), valid UTF-8; may be ""
	Header    string // the header line after '>', trimmed, valid UTF-8, from at most MaxHeaderBytes of its bytes
	Seq       []byte // residue bytes, whitespace removed, lines joined; not upper-cased or validated; at most Options.MaxResidues of them
	Total     int64  // residue bytes the record holds in the input; > len(Seq) when Seq was cut
	HeaderCut int64  // bytes of the header line beyond MaxHeaderBytes, not kept in Header (0: Header is whole)
	Problem   string // non-empty when the record is unusable at the FASTA level; the consumer skips it
}

// Truncated reports whether Seq holds fewer residue bytes than the record
// (it was cut at Options.MaxResidues, or at MaxPreambleBytes for a problem
// record). The bytes left out were counted, never stored or checked.
func (r *Record) Truncated() bool { return int64(len(r.Seq)) < r.Total }

// Block is the records of one chunk of input, in input order. Seq slices
// point into memory owned by the block.
type Block struct {
	Records []Record
	breaks  int   // line breaks in the input the block covers
	bytes   int64 // input bytes the block accounts for (compressed bytes of a gzip input), for Reader.InputBytes
}

// Options configures a Reader. The zero value gives the defaults.
type Options struct {
	Workers      int                                      // reader goroutines, default 4
	Prefetch     int                                      // blocks queued per worker, default 4 (queue capacity = Workers*Prefetch)
	BlockBytes   int                                      // target bytes of FASTA per block, default 1 MiB
	StallTimeout time.Duration                            // a read that makes no progress for this long ends the run (0 = 2 min, <0 = none)
	Stdin        io.Reader                                // what "-" reads (default os.Stdin)
	Open         func(name string) (io.ReadCloser, error) // optional, for tests; default opens files, and named pipes without blocking (see the package doc)

	// MaxResidues, when > 0, is the most residue bytes a Record keeps: Seq
	// holds the first MaxResidues residue bytes of the record, Total counts
	// all of them, and the rest is read and counted but never stored, so
	// memory does not grow with a record. 0 keeps every residue (memory then
	// grows with the longest record).
	MaxResidues int

	// Shard, when Shard.Count > 1, reads only part Shard.Index of Count of
	// the inputs: the inputs' bytes, concatenated in order, are cut into
	// Count equal byte ranges, and a record belongs to the range holding its
	// '>'. Each shard finds its records without reading the others' bytes
	// (ranges start at the next record start). A compressed or
	// non-seekable input is not split: it belongs, whole, to the shard
	// whose range holds its first byte (many gzip files spread over the
	// shards; one large gzip file goes to one shard). Standard input cannot
	// be sharded. Record.Index counts from 0 in each shard; line numbers
	// count from the shard's first byte in a file.
	Shard Shard

	maxHeader   int // MaxHeaderBytes; smaller in tests
	maxPreamble int // MaxPreambleBytes; smaller in tests
}

// Shard names part Index (0-based) of Count of the input.
type Shard struct{ Index, Count int }

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
	if o.MaxResidues < 0 {
		o.MaxResidues = 0
	}
	if o.maxHeader <= 0 {
		o.maxHeader = MaxHeaderBytes
	}
	if o.maxPreamble <= 0 {
		o.maxPreamble = MaxPreambleBytes
	}
	return o
}

// QuoteBytes is how many bytes of a user string Quote shows.
const QuoteBytes = 200

// Quote returns s as a Go string literal for error messages and logs that
// show user data (ids, headers, sequence text): at most its first
// QuoteBytes bytes (cut at a UTF-8 boundary), followed by a marker saying how
// many bytes were left out.
func Quote(s string) string {
	if len(s) <= QuoteBytes {
		return strconv.Quote(s)
	}
	n := QuoteBytes
	for n > QuoteBytes-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s... (%d more bytes)", strconv.Quote(s[:n]), len(s)-n)
}
