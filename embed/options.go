package embed

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

// Include says which per-record outputs to write: esm's one encoding
// (esm.Mean, esm.BOS, esm.PerTok, combined with |); columns are named
// <kind>_<layer>, e.g. mean_33, per_tok_33 (per-token rows without BOS/EOS).
type Include = esm.Repr

// Options configure one embedding run. Zero values take the defaults noted.
type Options struct {
	Inputs    []string      // FASTA paths (plain or gzip), "-" for stdin
	Out       string        // output path (a file for parquet, a directory for npy)
	Format    output.Format // default parquet
	DType     output.DType  // how embedding values are stored; default float32 (output.DType)
	Overwrite bool          // replace an existing output (only what output.Check allows) and discard an earlier run's parts

	// Identity is what a later run must match to resume this one's
	// committed rows (model fingerprint, options that change values, input
	// fingerprint); see output.PartsOptions. Runs resume automatically.
	Identity map[string]string
	// NoResume says no later run can resume this one (its input, standard
	// input, cannot be read again): a run that fails or is stopped removes
	// its committed rows instead of keeping them for a resume.
	NoResume bool
	// Rows are committed (durable, resumable) every ChunkRows rows or
	// ChunkEvery, whichever comes first; defaults in output.PartsOptions.
	ChunkRows  int64
	ChunkEvery time.Duration

	Include Include // default: esm.Mean
	Layers  []int   // layers as given by the user (negative count from the end); default [-1]

	MaxResidues  int  // truncation; default 1022 (fair-esm); < 0 disables
	ToksPerBatch int  // real tokens per packed batch (no padding); 0 = each device's esm.Model.AutoTokensPerBatch
	Workers      int  // reader goroutines; default 4
	Prefetch     int  // blocks queued per reader; default 4
	Strict       bool // a record that cannot be embedded ends the run instead of being skipped
	// Shard, when Shard.Count > 1, embeds only that part of the inputs
	// (data.Options.Shard); indices count from 0 in the shard.
	Shard data.Shard

	// Windowing, when on, embeds records longer than Windowing.Size
	// residues in overlapping windows (window.go) instead of truncating
	// them; MaxResidues must then be left 0. (Not to be confused with
	// Window, the packer's length-bucketing window.)
	Windowing Windowing

	// Window is how many tokens the packer sorts by length before cutting
	// batches (length bucketing); default 16 × ToksPerBatch, 2 × with
	// per-token outputs (rows wait in memory until earlier ones are written).
	Window int

	Stdin io.Reader // what "-" reads; default os.Stdin
	// Open opens an input (default os.Open); tests use it to make slow or
	// failing readers.
	Open     func(name string) (io.ReadCloser, error)
	Log      *slog.Logger      // warnings and progress lines; default discards
	Progress ProgressFunc      // called after every batch and at the end; nil = none
	Metadata map[string]string // stored in the output (model name, options, version)

	// Started, when set, is called once, on the goroutine that called Run
	// or RunDevices, when loading is over (every device open, the inputs
	// open) and before the first batch is packed: the run's clock
	// (Summary.Elapsed, and so every rate and share of wall time) starts
	// as it returns. A monitor counts device utilization from here
	// (monitor.Monitor.ComputeStarted). Not called when the run fails or
	// finds its output complete before then. It must return quickly.
	Started func()

	// ReaderStall is how long a reader may make no progress before the run
	// fails (default 2 minutes).
	ReaderStall time.Duration
}

// devStdin names the file on standard input where the system has such a
// name (Linux, macOS); the output guard stats it like any input.
const devStdin = "/dev/stdin"

// partsOptions are the output package's options for this run: the inputs
// are never replaced, whatever Overwrite says.
func (o *Options) partsOptions() output.PartsOptions {
	var keep []string
	for _, in := range o.Inputs {
		if in != "-" {
			keep = append(keep, in)
		} else if _, err := os.Stat(devStdin); err == nil {
			keep = append(keep, devStdin) // a file given as "< file" stays an input
		}
	}
	return output.PartsOptions{Overwrite: o.Overwrite, Keep: keep, Log: o.Log, Identity: o.Identity,
		ChunkRows: o.ChunkRows, ChunkEvery: o.ChunkEvery}
}

// ProgressFunc receives running totals; it must return quickly.
type ProgressFunc func(s *Summary, final bool)

// Summary is the account of a run.
type Summary struct {
	Records     int64 // FASTA records seen (embedded + skipped + resumed)
	RecordsRead int64 // records in the input blocks read so far (ahead of Records: a block holds up to ~1 MiB of input)
	Embedded    int64 // rows written
	Skipped     int64 // records that could not be embedded (see warnings)
	Truncated   int64 // embedded records cut to MaxResidues
	Windowed    int64 // embedded records longer than Windowing.Size, embedded in overlapping windows
	UnknownRecs int64 // embedded records with letters mapped to <unk> (J)
	EmptyIDs    int64 // records whose header has no id
	DupIDs      int64 // records whose id was seen before (among the first MaxTrackedIDs ids)
	Residues    int64 // residues embedded (after truncation)
	Tokens      int64 // tokens computed (residues + BOS/EOS)
	Batches     int64
	Elapsed     time.Duration
	// Time the compute stage waited for its next batch (loader wait) and for
	// a free output buffer (writer wait).
	LoaderWait, WriterWait time.Duration
	// Compute is the time spent inside the model's forward pass.
	Compute time.Duration
	// QueueDepth is the number of packed batches ready when the last batch
	// was taken; ReaderQueue the FASTA blocks waiting in the reader queue.
	QueueDepth, ReaderQueue int
	// Devices is each device's share (LoaderWait, WriterWait and Compute
	// above are their sums).
	Devices []DeviceSummary
	Output  string // where the result was published, or the parts directory holding committed rows
	// Complete says the output already existed, written by a run with the
	// same identity: nothing was done.
	Complete bool
	// Resumed is the number of input records an earlier run had already
	// embedded or skipped (committed); this run started after them.
	Resumed int64
	// InputBytes is the input read so far (compressed bytes for gzip);
	// InputSize is all of it (a shard's part), 0 when not known up front
	// (stdin, a named pipe).
	InputBytes, InputSize int64
}
