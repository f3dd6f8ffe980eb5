package output

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/esm2go/esm2go/internal/ctxio"
)

// A resumable output in progress: the directory "<out>.parts" holds the
// output being written and manifest.json, the list of committed chunks,
// each a consecutive range of input records:
//
//	<out>.parts/manifest.json    {"version", "format", "columns", "identity",
//	                               "chunks": [{"name","first","next","rows",
//	                               "bytes","crc32c","data":[segments]}...]}
//	<out>.parts/output.parquet   parquet: the chunks, one after the other
//	<out>.parts/output.npy.d/    npy: each column's values, chunk after chunk
//	<out>.parts/chunk-000000.d   npy: a chunk's offsets and records.tsv
//
// parts_data.go says how a chunk lies in the shared files (its segments):
// every value is written once, where the output will hold it.
//
// Commit protocol: the chunk's writer is closed (npy: its small directory
// published like any output), the shared files are fsynced, then
// manifest.json is rewritten (temporary, fsync, rename, fsync) with the
// chunk's segments and their CRC-32C. A kill at any point leaves the
// manifest listing only chunks that are complete on disk; what it does not
// list is a leftover, removed (chunk directories) or cut off (the shared
// files) when the run resumes. Resuming checks every listed chunk's
// directory and segments against their sizes and CRCs and keeps the
// longest intact prefix; a chunk that cannot be read (an I/O or
// permission error, which shows no damage) stops the run instead, and
// nothing is changed.
//
// At the end Finish completes the output in the parts directory (the
// parquet footer; npy headers, offsets, records.tsv, metadata.json),
// renames it to <out> and removes the directory. A run that stops early
// leaves the directory: the next run with the same identity (model,
// options, input) resumes after its last committed record; another
// identity is refused, naming the difference, unless Overwrite.

// PartsSuffix names the directory of a resumable run in progress.
const PartsSuffix = ".parts"

// partsVersion is the manifest's layout version. Version 1 (before
// esm2go wrote values once) kept each chunk as a separate output.
const partsVersion = 2

// maxManifest bounds what a manifest may weigh when read. A chunk entry
// is ~150 bytes plus ~100 a column (its segment): a run of 100 columns
// committing every 2 minutes for 30 days lists 21,600 chunks, about
// 225 MB (TestPartsManifestRoom), which must stay readable or the run
// could never resume.
const maxManifest = 1 << 30

// RunIDKey is the metadata key of a merged output naming the parts
// directory it came from: a run killed after publishing the output but
// before removing its parts is recognised as complete.
const RunIDKey = "esm2go.run_id"

// ErrComplete is returned (wrapped) by OpenParts when the output already
// exists and was written by a run with the same format, columns and
// identity: there is nothing to do (leftover parts of that run, killed
// while cleaning up, are removed).
var ErrComplete = errors.New("the output is already complete")

// ErrIncompatible is returned (wrapped) when an existing parts directory
// belongs to a run with another identity, format or schema.
var ErrIncompatible = errors.New("an earlier run with other settings is in progress here")

// PartsOptions adjust OpenParts. Zero values take the defaults noted.
type PartsOptions struct {
	// Overwrite discards an existing parts directory instead of resuming
	// it, and allows replacing an existing output at Finish (as Options).
	Overwrite bool
	Keep      []string     // as Options.Keep
	Log       *slog.Logger // notices about resuming and leftovers
	// Identity is what must be equal for a run to resume another's parts:
	// model fingerprint, options that change values, input fingerprint.
	Identity map[string]string
	// A chunk is committed when it holds ChunkRows rows (default 100,000)
	// or ChunkBytes bytes of values (default 1 GiB), or has been open for
	// ChunkEvery (default 2 minutes): at most that much work is lost when a
	// run is killed.
	ChunkRows  int64
	ChunkBytes int64
	ChunkEvery time.Duration
}

// Parts is a resumable output in progress. Its methods are called from one
// goroutine.
type Parts struct {
	final, dir string
	format     Format
	schema     Schema
	opts       PartsOptions
	lock       *outputLock
	man        manifest

	data []*dataFile // the shared files (parts_data.go)
	pool *pagePool   // parquet page buffers, from one chunk to the next
	// err is set when a commit failed after writing to the shared files:
	// they no longer end where the manifest says, so nothing more is
	// written; a new run resumes from the manifest.
	err error

	finished bool // Finish published the output (its parts are retired)
	closed   bool

	cur      Writer // chunk being written, or nil
	curEnd   int64  // one past the index of the last row written to cur
	curName  string
	curRows  int64
	curBytes int64
	curStart time.Time
	now      func() time.Time
}

type manifest struct {
	Version  int               `json:"version"`
	RunID    string            `json:"run_id"` // random; also in the merged output's metadata (RunIDKey)
	Format   Format            `json:"format"`
	Columns  []columnMeta      `json:"columns"`
	DType    DType             `json:"dtype,omitempty"` // absent: float32 (manifests before dtypes)
	Identity map[string]string `json:"identity"`
	Chunks   []chunkMeta       `json:"chunks"`
}

type chunkMeta struct {
	Name  string `json:"name"`
	First int64  `json:"first"` // first input index the chunk covers
	Next  int64  `json:"next"`  // one past the last input index it covers
	// Boundary is the caller's replay point for resuming after this chunk
	// (embed: the window boundary at or before Next; see Commit).
	Boundary int64  `json:"boundary"`
	Rows     int64  `json:"rows"`
	Bytes    int64  `json:"bytes"`
	CRC32C   uint32 `json:"crc32c"`
	// Data are the chunk's segments of the shared files, in dataFiles
	// order.
	Data []segment `json:"data"`
}

// next is the first input index no committed chunk covers.
func (m *manifest) next() int64 {
	if len(m.Chunks) == 0 {
		return 0
	}
	return m.Chunks[len(m.Chunks)-1].Next
}

// OpenParts starts or resumes the resumable output whose result Finish
// publishes at final. It holds a lock on the parts directory until Close
// or Finish, so a second run on the same output fails with ErrLocked.
func OpenParts(final string, format Format, schema Schema, opts PartsOptions) (*Parts, error) {
	return OpenPartsContext(context.Background(), final, format, schema, opts)
}

// OpenPartsContext is OpenParts whose check of an earlier run's committed
// chunks (every committed byte is read back: minutes for a large output)
// stops when ctx is done, changing nothing; the error then wraps
// ctx.Err().
func OpenPartsContext(ctx context.Context, final string, format Format, schema Schema, opts PartsOptions) (*Parts, error) {
	if err := schema.validate(); err != nil {
		return nil, fmt.Errorf("output: %s: %w", final, err)
	}
	final, err := cleanTarget(final)
	if err != nil {
		return nil, err
	}
	if format != Parquet && format != NPY {
		return nil, fmt.Errorf("output: %s: unknown format %q", final, format)
	}
	if opts.ChunkRows <= 0 {
		opts.ChunkRows = 100_000
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 1 << 30
	}
	if opts.ChunkEvery <= 0 {
		opts.ChunkEvery = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dir := final + PartsSuffix
	lock, err := acquireLock(dir)
	if err != nil {
		return nil, err
	}
	p := &Parts{final: final, dir: dir, format: format, schema: schema, opts: opts, lock: lock, now: time.Now}
	if err := p.open(ctx); err != nil {
		lock.release()
		return nil, err
	}
	return p, nil
}

func (p *Parts) open(ctx context.Context) error {
	cleanStale(p.dir, p.opts.Log)
	want := manifest{Version: partsVersion, Format: p.format, Columns: columnsMeta(p.schema.Columns, false), DType: dtypeMeta(p.schema.DType), Identity: p.opts.Identity}
	if !p.opts.Overwrite {
		if err := p.completed(want); err != nil {
			return err
		}
	}
	if err := checkExisting(p.final, Options{Overwrite: p.opts.Overwrite, Keep: p.opts.Keep}); err != nil {
		return err
	}
	info, err := os.Lstat(p.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := p.create(want); err != nil {
			return err
		}
		return p.openData()
	case err != nil:
		return fmt.Errorf("output: %w", err)
	case !info.IsDir():
		return fmt.Errorf("output: %s is %s, not a parts directory: %w", p.dir, describe(p.dir, info), ErrNotReplaceable)
	}
	have, err := readManifest(p.dir)
	if err != nil {
		if !p.opts.Overwrite {
			return fmt.Errorf("output: %s: %w; move it away, or overwrite to discard it", p.dir, err)
		}
		if err := p.discard(want, err.Error()); err != nil {
			return err
		}
		return p.openData()
	}
	want.RunID = have.RunID
	if diff := have.differs(&want); diff != "" {
		if !p.opts.Overwrite {
			return fmt.Errorf("output: %s: %w (%s); rerun with the same model, options and input to resume it, or overwrite to discard it", p.dir, ErrIncompatible, diff)
		}
		if err := p.discard(want, diff); err != nil {
			return err
		}
		return p.openData()
	}
	if p.opts.Overwrite {
		if err := p.discard(want, "overwrite"); err != nil {
			return err
		}
		return p.openData()
	}
	p.man = *have
	if have.Version == 1 {
		if err := p.migrateV1(); err != nil {
			return fmt.Errorf("output: %s: converting the parts of an earlier esm2go: %w", p.dir, err)
		}
	} else if err := p.verify(ctx); err != nil {
		return err
	}
	p.removeUnlisted()
	if err := p.openData(); err != nil {
		return err
	}
	if n := p.man.next(); n > 0 {
		p.opts.Log.Info("resuming an earlier run", "parts", p.dir, "chunks", len(p.man.Chunks), "rows", p.Rows(), "next_record", n)
	}
	return nil
}

// completed recognises an output this run would write, already complete:
// published by a run with the same format, columns and identity (its
// metadata says so), possibly killed before it could remove its parts
// (they are removed now). Schedulers that rerun a job whose process was
// killed after the work was done then succeed at once.
func (p *Parts) completed(want manifest) error {
	if _, err := os.Lstat(p.final); err != nil {
		return nil
	}
	sch, format, err := readSchema(p.final)
	if err != nil {
		return nil
	}
	if format != p.format || sch.DType.orDefault() != p.schema.DType.orDefault() || !slices.Equal(columnsMeta(sch.Columns, false), want.Columns) || sch.Metadata[IdentityKey] != identityJSON(want.Identity) {
		return nil
	}
	if m, err := readManifest(p.dir); err == nil && m.RunID == sch.Metadata[RunIDKey] {
		if err := retire(p.dir); err != nil {
			return fmt.Errorf("output: %s is complete, but %s could not be removed: %w", p.final, p.dir, err)
		}
		p.opts.Log.Info("removed the parts of the run that completed the output", "parts", p.dir)
	}
	return fmt.Errorf("output: %s: %w", p.final, ErrComplete)
}

// IdentityKey is the metadata key of a merged output holding the identity
// (PartsOptions.Identity) of the run that wrote it, as JSON.
const IdentityKey = "esm2go.identity"

func identityJSON(id map[string]string) string {
	if id == nil {
		id = map[string]string{}
	}
	b, _ := json.Marshal(id) // map keys are sorted
	return string(b)
}

// create makes a fresh parts directory with an empty manifest: built under
// a temporary name and renamed, so a parts directory always has one.
func (p *Parts) create(m manifest) error {
	dir, pattern := tempPattern(p.dir)
	tmp, err := os.MkdirTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("output: %w", err)
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		os.Remove(tmp)
		return err
	}
	m.RunID = hex.EncodeToString(id[:])
	p.man = m
	final := p.dir
	p.dir = tmp
	err = p.writeManifest()
	p.dir = final
	if err == nil {
		err = renameNoReplace(tmp, final)
		if errors.Is(err, errRenameUnsupported) {
			err = os.Rename(tmp, final)
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("output: %s: %w", final, err)
	}
	return syncDir(filepath.Dir(final))
}

// discard removes an earlier run's parts directory (only its own files) and
// starts afresh.
func (p *Parts) discard(m manifest, why string) error {
	if err := removeOwnDir(p.dir); err != nil {
		return fmt.Errorf("output: discarding %s: %w", p.dir, err)
	}
	p.opts.Log.Warn("discarded an earlier run's parts", "parts", p.dir, "why", why)
	return p.create(m)
}

// ownName reports whether name is something a parts directory holds.
func ownName(name string) bool {
	return name == "manifest.json" || name == dataParquet || name == dataNPY || strings.HasPrefix(name, "chunk-") || strings.HasPrefix(name, ".chunk-") ||
		strings.HasPrefix(name, ".manifest.json")
}

// ownNPYName reports whether name is something output.npy.d holds: the
// arrays (data and offsets), records.tsv and metadata.json (Finish).
func ownNPYName(name string) bool {
	return strings.HasSuffix(name, ".npy") || name == "records.tsv" || name == "metadata.json"
}

// foreignNPY lists what output.npy.d in the parts directory dir holds
// that esm2go did not write.
func foreignNPY(dir string) ([]string, error) {
	path := filepath.Join(dir, dataNPY)
	if info, err := os.Lstat(path); err != nil || !info.IsDir() {
		return nil, nil // none, or not a directory (an output it replaced, moments before a kill)
	}
	ents, err := os.ReadDir(path)
	var foreign []string
	for _, e := range ents {
		if !ownNPYName(e.Name()) || !e.Type().IsRegular() {
			foreign = append(foreign, filepath.Join(dataNPY, e.Name()))
		}
	}
	return foreign, err
}

// removeOwnDir removes a parts directory if it holds nothing but parts files.
func removeOwnDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var foreign []string
	for _, e := range ents {
		if !ownName(e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	more, err := foreignNPY(dir)
	if err != nil {
		return err
	}
	foreign = append(foreign, more...)
	if len(foreign) > 0 {
		return fmt.Errorf("it also holds %s, which esm2go did not write: %w", listQuoted(foreign, 5), ErrNotReplaceable)
	}
	return os.RemoveAll(dir)
}

func readManifest(dir string) (*manifest, error) {
	f, err := os.Open(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, errors.New("no manifest.json: not a parts directory of a run esm2go can resume")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest.json is larger than %d bytes", maxManifest)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if m.Version != partsVersion && m.Version != 1 {
		return nil, fmt.Errorf("manifest.json has layout version %d, this esm2go writes %d", m.Version, partsVersion)
	}
	var next int64
	for i, c := range m.Chunks {
		if ((c.Name != "" || m.Version == 1) && (c.Name != filepath.Base(c.Name) || !strings.HasPrefix(c.Name, "chunk-"))) || (m.Version == 1 && len(c.Data) > 0) || c.First != next || c.Next < c.First || c.Rows < 0 || c.Rows > c.Next-c.First || c.Bytes < 0 || c.Boundary < 0 || c.Boundary > c.Next {
			return nil, fmt.Errorf("manifest.json: chunk %d (%s) is inconsistent", i, quote(c.Name))
		}
		for _, d := range c.Data {
			if d.Offset < 0 || d.Bytes < 0 || d.Offset > math.MaxInt64-d.Bytes {
				return nil, fmt.Errorf("manifest.json: chunk %d (%s) is inconsistent", i, quote(c.Name))
			}
		}
		next = c.Next
	}
	return &m, nil
}

// differs names the first difference that forbids resuming, or "".
func (m *manifest) differs(want *manifest) string {
	if m.Format != want.Format {
		return fmt.Sprintf("format %s, this run %s", m.Format, want.Format)
	}
	if a, b := m.DType.orDefault(), want.DType.orDefault(); a != b {
		return fmt.Sprintf("dtype %s, this run %s", a, b)
	}
	if !slices.Equal(m.Columns, want.Columns) {
		return fmt.Sprintf("columns %s, this run %s", colNames(m.Columns), colNames(want.Columns))
	}
	keys := map[string]bool{}
	for k := range m.Identity {
		keys[k] = true
	}
	for k := range want.Identity {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if a, b := m.Identity[k], want.Identity[k]; a != b {
			return fmt.Sprintf("%s was %s, this run has %s", k, quote(a), quote(b))
		}
	}
	return ""
}

func colNames(cols []columnMeta) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = fmt.Sprintf("%s(%d)", c.Name, c.Dim)
	}
	return strings.Join(names, ",")
}

// damageError is an error showing that a committed chunk is not what its
// listing says (missing, other bytes, other size): the run resumes before
// it. Any other error while checking (EIO, EACCES, too many open files)
// proves nothing and must not cost committed chunks: the run is refused
// and the parts are left as they are.
type damageError struct{ error }

func (d damageError) Unwrap() error { return d.error }

func damagef(format string, args ...any) error { return damageError{fmt.Errorf(format, args...)} }

// isDamage reports whether err (from checking a chunk) shows damage.
func isDamage(err error) bool {
	var d damageError
	return errors.As(err, &d) || errors.Is(err, fs.ErrNotExist)
}

// verify keeps the longest prefix of listed chunks that are intact on
// disk. An error that shows no damage (see damageError) is returned, and
// nothing is changed.
func (p *Parts) verify(ctx context.Context) error {
	ends := p.dataStarts()
	var bytes int64
	for _, c := range p.man.Chunks {
		bytes += c.Bytes
		for _, s := range c.Data {
			bytes += s.Bytes
		}
	}
	if bytes >= 1<<30 {
		// Every committed byte is read back: say so before a long pause.
		p.opts.Log.Info("checking the committed chunks of an earlier run before resuming", "parts", p.dir, "chunks", len(p.man.Chunks), "bytes", bytes)
	}
	for i, c := range p.man.Chunks {
		var err error
		switch {
		case (p.format == NPY) != (c.Name != ""):
			err = damagef("chunk name %s does not fit the %s format", quote(c.Name), p.format)
		case c.Name != "":
			size, crc, cerr := checksumContext(ctx, filepath.Join(p.dir, c.Name))
			if err = cerr; err == nil && (size != c.Bytes || crc != c.CRC32C) {
				err = damagef("%d bytes with CRC-32C %08x, the manifest says %d bytes, %08x", size, crc, c.Bytes, c.CRC32C)
			}
		}
		if err == nil {
			err = p.checkSegments(ctx, c, ends)
		}
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("output: %s: checking the committed chunks of an earlier run stopped at chunk %d of %d: %w; nothing was changed", p.dir, i+1, len(p.man.Chunks), ctx.Err())
		}
		if err != nil && !isDamage(err) {
			return fmt.Errorf("output: %s: chunk %d (records %d to %d) could not be checked: %w; nothing was changed: run again once it can be read, or overwrite to discard the parts", p.dir, i, c.First, c.Next-1, err)
		}
		if err != nil {
			p.opts.Log.Warn("a committed chunk is damaged: resuming before it", "chunk", c.Name, "err", err, "next_record", c.First)
			p.man.Chunks = p.man.Chunks[:i]
			if werr := p.writeManifest(); werr != nil {
				p.opts.Log.Warn("could not rewrite the manifest", "err", werr)
			}
			return nil
		}
	}
	return nil
}

// removeUnlisted removes files of chunks that were never committed (a kill
// between a chunk's publish and the manifest update).
func (p *Parts) removeUnlisted() {
	listed := map[string]bool{"manifest.json": true, dataParquet: true, dataNPY: true}
	for _, c := range p.man.Chunks {
		listed[c.Name] = true
	}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if listed[n] || !ownName(n) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(p.dir, n)); err == nil {
			p.opts.Log.Info("removed an uncommitted chunk of an earlier run", "path", filepath.Join(p.dir, n))
		}
	}
}

// checksum returns the size and CRC-32C of a chunk: a file, or an npy
// directory's files in name order.
func checksum(path string) (int64, uint32, error) {
	return checksumContext(context.Background(), path)
}

// checksumContext is checksum, stopping when ctx is done.
func checksumContext(ctx context.Context, path string) (int64, uint32, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return 0, 0, err
	}
	files := []string{path}
	if info.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return 0, 0, err
		}
		files = files[:0]
		for _, e := range ents {
			if !e.Type().IsRegular() {
				return 0, 0, damagef("%s: unexpected entry %s", path, quote(e.Name()))
			}
			files = append(files, filepath.Join(path, e.Name()))
		}
	} else if !info.Mode().IsRegular() {
		return 0, 0, damagef("%s is not a file or directory", path)
	}
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	var size int64
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(h, ctxio.Reader(ctx, f))
		f.Close()
		if err != nil {
			return 0, 0, err
		}
		size += n
	}
	return size, h.Sum32(), nil
}

// marshalManifest is manifest.json's content: compact, as it is
// rewritten at every commit and grows with the chunks.
func marshalManifest(m *manifest) ([]byte, error) { return json.Marshal(m) }

// writeManifest replaces manifest.json atomically and durably.
func (p *Parts) writeManifest() error {
	b, err := marshalManifest(&p.man)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(p.dir, ".manifest.json.tmp-*")
	if err != nil {
		return fmt.Errorf("output: manifest: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(p.dir, "manifest.json"))
	}
	if err == nil {
		err = syncDir(p.dir)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("output: %s: manifest: %w", p.dir, err)
	}
	return nil
}

// Next is the first input index not covered by a committed chunk: a
// resumed run starts there (every earlier record is embedded or skipped).
func (p *Parts) Next() int64 { return p.man.next() }

// Boundary is the replay point given with the last commit (0 before any):
// the caller may need to recompute records from there to resume exactly.
func (p *Parts) Boundary() int64 {
	if len(p.man.Chunks) == 0 {
		return 0
	}
	return p.man.Chunks[len(p.man.Chunks)-1].Boundary
}

// Rows is the number of rows in committed chunks.
func (p *Parts) Rows() int64 {
	var n int64
	for _, c := range p.man.Chunks {
		n += c.Rows
	}
	return n
}

// Dir is the parts directory.
func (p *Parts) Dir() string { return p.dir }

// Write appends a row (r.Index >= Next) to the current chunk.
func (p *Parts) Write(r *Row) error {
	if p.err != nil {
		return p.err
	}
	if r.Index < p.man.next() {
		return fmt.Errorf("output: record %d (%s) is before the resume point %d", r.Index, quote(r.ID), p.man.next())
	}
	if p.cur == nil {
		if err := p.startChunk(); err != nil {
			return err
		}
	}
	if err := p.cur.Write(r); err != nil {
		return err
	}
	p.curEnd = r.Index + 1
	p.curRows++
	for _, v := range r.Values {
		p.curBytes += 4 * int64(len(v))
	}
	return nil
}

func (p *Parts) startChunk() error {
	if p.err != nil {
		return p.err
	}
	for _, d := range p.data {
		if err := d.begin(); err != nil {
			return p.fail(fmt.Errorf("output: %w", err))
		}
	}
	p.curName = chunkName(p.format, len(p.man.Chunks))
	var w Writer
	var err error
	if p.format == Parquet {
		if p.pool == nil {
			p.pool = newPagePool()
		}
		w, err = newParquetStream(owner{final: p.final}, p.data[0], p.schema, p.pool)
	} else {
		w, err = newNPYWriterShared(owner{final: filepath.Join(p.dir, p.curName), opts: Options{Overwrite: true}}, p.schema, p.dataWriters())
	}
	if err != nil {
		return err
	}
	p.cur, p.curEnd, p.curRows, p.curBytes, p.curStart = w, 0, 0, 0, p.now()
	return nil
}

// Due reports whether the current chunk is big or old enough to commit.
func (p *Parts) Due() bool {
	return p.cur != nil && (p.curRows >= p.opts.ChunkRows || p.curBytes >= p.opts.ChunkBytes || p.now().Sub(p.curStart) >= p.opts.ChunkEvery)
}

// Commit makes the rows written so far durable as a chunk covering input
// records up to next (exclusive; records without a row in that range were
// skipped), and records boundary (<= next) for Boundary. A commit with no
// new rows and no new records does nothing.
func (p *Parts) Commit(next, boundary int64) error {
	if p.err != nil {
		return p.err
	}
	if boundary < 0 || boundary > next {
		return fmt.Errorf("output: commit up to record %d with replay point %d", next, boundary)
	}
	first := p.man.next()
	if next < first {
		return fmt.Errorf("output: commit up to record %d, before the committed %d", next, first)
	}
	if p.cur != nil && next < p.curEnd {
		// The chunk would hold a row past its end: the manifest would be
		// refused, or a resumed run would write that row again.
		return fmt.Errorf("output: commit up to record %d, but record %d was written", next, p.curEnd-1)
	}
	if p.cur == nil {
		if next == first {
			return nil
		}
		if err := p.startChunk(); err != nil { // records were all skipped: an empty chunk records that
			return err
		}
	}
	w, name, rows := p.cur, p.curName, p.curRows
	p.cur = nil
	if err := w.Close(); err != nil {
		return p.fail(err)
	}
	if err := p.syncData(); err != nil {
		return p.fail(err)
	}
	var size int64
	var crc uint32
	if name != "" {
		var err error
		if size, crc, err = checksum(filepath.Join(p.dir, name)); err != nil {
			return p.fail(fmt.Errorf("output: %s: %w", p.dir, err))
		}
	}
	data := make([]segment, len(p.data))
	for i, d := range p.data {
		var err error
		if data[i], err = d.segment(); err != nil {
			return p.fail(fmt.Errorf("output: %w", err))
		}
	}
	p.man.Chunks = append(p.man.Chunks, chunkMeta{Name: name, First: first, Next: next, Boundary: boundary, Rows: rows, Bytes: size, CRC32C: crc, Data: data})
	if err := p.writeManifest(); err != nil {
		p.man.Chunks = p.man.Chunks[:len(p.man.Chunks)-1]
		return p.fail(err)
	}
	return nil
}

// fail makes err sticky: the shared files hold bytes the manifest does
// not list, so nothing more may be appended in this run.
func (p *Parts) fail(err error) error {
	p.err = fmt.Errorf("%w (the run can resume from its last commit)", err)
	return err
}

// Finish commits what is left (up to next), merges every chunk into the
// final output, removes the parts directory and releases the lock.
func (p *Parts) Finish(next int64, metadata map[string]string) error {
	defer p.Close()
	if len(p.man.Chunks) == 0 && p.cur == nil {
		// No record at all (a shard of a small input, an empty stdin): one
		// empty chunk, so that the output exists, with its schema and
		// metadata, as every other shard's does.
		if err := p.startChunk(); err != nil {
			return err
		}
	}
	if err := p.Commit(next, next); err != nil {
		return err
	}
	meta := maps.Clone(metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[RunIDKey] = p.man.RunID
	meta[IdentityKey] = identityJSON(p.opts.Identity)
	src := filepath.Join(p.dir, dataParquet)
	finish := p.finishParquet
	if p.format == NPY {
		src, finish = filepath.Join(p.dir, dataNPY), p.finishNPY
	}
	err := finish(meta)
	p.closeData()
	if err == nil {
		err = publish(src, p.final, Options{Overwrite: p.opts.Overwrite, Keep: p.opts.Keep})
	}
	if err != nil {
		return fmt.Errorf("output: completing %s from %s: %w", p.final, p.dir, err)
	}
	p.finished = true
	if err := retire(p.dir); err != nil {
		p.opts.Log.Warn("the output is complete, but its parts directory could not be removed", "parts", p.dir, "err", err)
	}
	return nil
}

// retire removes a finished parts directory: first renamed out of the way
// (".<base>.done-*", in one step), then removed, so that a kill during the
// removal never leaves a parts directory without its manifest.
func retire(dir string) error {
	done, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".done-*")
	if err != nil {
		return err
	}
	target := filepath.Join(done, "parts")
	if err := os.Rename(dir, target); err != nil {
		os.Remove(done)
		return err
	}
	if err := removeOwnDir(target); err != nil {
		return err
	}
	return os.Remove(done)
}

// Close abandons the current uncommitted chunk (its rows are lost; call
// Commit first to keep them) and releases the lock; committed chunks stay
// for a later run to resume. A parts directory without a committed chunk
// holds nothing to resume and is removed, so that it does not stand in the
// way of the next run. It is a no-op after Finish or Close.
func (p *Parts) Close() error {
	return p.close(false)
}

// Abandon is Close that also removes committed chunks: for a run that no
// later run can resume (its input cannot be read again).
func (p *Parts) Abandon() error {
	return p.close(true)
}

func (p *Parts) close(all bool) error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.err == nil {
		// The shared files are closed: nothing more can be written.
		p.err = fmt.Errorf("output: %s: the output was already completed or closed", p.final)
	}
	var err error
	if p.cur != nil {
		err = p.cur.Abort()
		p.cur = nil
	}
	p.closeData()
	if (all || len(p.man.Chunks) == 0) && !p.finished {
		if rerr := retire(p.dir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			p.opts.Log.Warn("the parts directory could not be removed", "parts", p.dir, "err", rerr)
		}
	}
	p.lock.release()
	return err
}
