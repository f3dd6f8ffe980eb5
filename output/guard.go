package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// What an output may replace, and how a run owns its output.
//
// Replace: only with Options.Overwrite, and only
//   - a regular file that is not one of Options.Keep (the run's inputs), or
//   - a directory that is provably an esm2go npy output: its metadata.json
//     says so, and it holds nothing but the files that metadata names.
//
// Anything else (a directory esm2go did not write, ".", a symbolic link, a
// device, a FIFO) is refused with ErrNotReplaceable and a description of what
// is there. A directory is replaced by an atomic exchange (renameat2
// RENAME_EXCHANGE) where the file system supports it.
//
// Own: a writer holds an exclusive lock (flock) on ".<base>.lock" beside the
// final path from Create until Close or Abort, so a second run
// on the same output fails at once with ErrLocked instead of racing the first.
// The lock dies with the process, so a killed run never blocks later ones.
//
// Leftovers: holding the lock, Create looks for temporaries of earlier runs
// of the same output that were killed before they could clean up
// (".<base>.tmp-*", ".<base>.old-*"),
// restores an old output that an interrupted replace had moved aside, removes
// the rest and reports each on Options.Log.

// ErrLocked is returned (wrapped) when another process is writing the same
// output.
var ErrLocked = errors.New("output is being written by another run")

// ErrNotReplaceable is returned (wrapped) when Overwrite is set but the
// existing path is not something an output may replace.
var ErrNotReplaceable = errors.New("not an esm2go output; refusing to replace it")

// Check reports whether an output could be created and published at path
// with opts, without creating anything: the path must be publishable, not
// locked by another run (as an output or as a resumable run's parts), and
// it may not exist unless opts.Overwrite is set and it is replaceable.
// Create and OpenParts run the same checks; callers use Check to fail
// before expensive work.
func Check(path string, opts Options) error {
	path, err := cleanTarget(path)
	if err != nil {
		return err
	}
	for _, p := range []string{path, path + PartsSuffix} {
		l, err := acquireLock(p)
		if err != nil {
			return err
		}
		l.release()
	}
	if !opts.Overwrite && writtenWithIdentity(path) {
		// OpenParts decides: it may be this very run's output, complete.
		return nil
	}
	return checkExisting(path, opts)
}

// writtenWithIdentity reports whether path is an output whose metadata
// names the identity of the run that wrote it.
func writtenWithIdentity(path string) bool {
	if _, err := os.Lstat(path); err != nil {
		return false
	}
	sch, _, err := readSchema(path)
	if err != nil {
		return false
	}
	_, ok := sch.Metadata[IdentityKey]
	return ok
}

// cleanTarget refuses paths that can never be an output's final name.
func cleanTarget(path string) (string, error) {
	if path == "" {
		return "", errors.New("output: empty path")
	}
	path = filepath.Clean(path)
	switch base := filepath.Base(path); base {
	case ".", "..", string(filepath.Separator):
		return "", fmt.Errorf("output: %q names a directory itself, not an output path (give a new file or directory name)", path)
	}
	return path, nil
}

func checkExisting(path string, opts Options) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if !opts.Overwrite {
		return fmt.Errorf("output: %s: %w (%s)", path, ErrExists, describe(path, info))
	}
	return replaceable(path, info, opts.Keep)
}

// replaceable says whether the existing entry at path (info from Lstat) may be
// replaced by an output.
func replaceable(path string, info fs.FileInfo, keep []string) error {
	switch {
	case info.Mode().IsRegular():
		for _, k := range keep {
			if ki, err := os.Stat(k); err == nil && os.SameFile(ki, info) {
				return fmt.Errorf("output: %s is %s, an input of this run: %w", path, k, ErrNotReplaceable)
			}
		}
		return nil
	case info.IsDir():
		if err := isOutputDir(path); err != nil {
			return fmt.Errorf("output: %s is a directory esm2go did not write (%v): %w", path, err, ErrNotReplaceable)
		}
		return nil
	}
	return fmt.Errorf("output: %s is %s: %w", path, describe(path, info), ErrNotReplaceable)
}

// describe says in a few words what is at path.
func describe(path string, info fs.FileInfo) string {
	m := info.Mode()
	switch {
	case m.IsRegular():
		return fmt.Sprintf("a file of %d bytes", info.Size())
	case m&fs.ModeSymlink != 0:
		if t, err := os.Readlink(path); err == nil {
			return fmt.Sprintf("a symbolic link to %s", quote(t))
		}
		return "a symbolic link"
	case m.IsDir():
		if isOutputDir(path) == nil {
			return "an esm2go npy output directory"
		}
		n := -1
		if d, err := os.Open(path); err == nil {
			names, _ := d.Readdirnames(1001)
			d.Close()
			n = len(names)
		}
		switch {
		case n < 0:
			return "a directory"
		case n > 1000:
			return "a directory of more than 1000 entries"
		}
		return fmt.Sprintf("a directory of %d entries", n)
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a " + m.Type().String() + " entry"
}

// quote cuts s to 200 bytes for an error message.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// maxMetadataJSON bounds what isOutputDir reads: esm2go's metadata.json is a
// few KB (columns and a handful of strings).
const maxMetadataJSON = 1 << 20

// isOutputDir says why dir is not an npy output written by esm2go, or nil
// when it is: metadata.json declares the npy layout, and every entry is a
// regular file that metadata names (or a file of the layout's fixed names).
func isOutputDir(dir string) error {
	f, err := os.Open(filepath.Join(dir, "metadata.json"))
	if err != nil {
		return errors.New("no esm2go metadata.json")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMetadataJSON+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	var meta struct {
		LayoutVersion int          `json:"layout_version"`
		Format        Format       `json:"format"`
		Columns       []columnMeta `json:"columns"`
	}
	if len(b) > maxMetadataJSON || json.Unmarshal(b, &meta) != nil || meta.LayoutVersion < 1 || meta.Format != NPY {
		return errors.New("metadata.json is not esm2go's")
	}
	allowed := map[string]bool{"metadata.json": true, "records.tsv": true}
	for _, c := range meta.Columns {
		for _, n := range []string{c.File, c.Offsets} {
			if n != "" && n == filepath.Base(n) {
				allowed[n] = true
			}
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	ents, err := d.ReadDir(len(allowed) + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var foreign []string
	for _, e := range ents {
		if !allowed[e.Name()] || !e.Type().IsRegular() {
			foreign = append(foreign, e.Name())
		}
	}
	if len(ents) > len(allowed) && len(foreign) == 0 {
		foreign = append(foreign, "more entries than its metadata names")
	}
	if len(foreign) > 0 {
		return fmt.Errorf("it also holds %s", listQuoted(foreign, 5))
	}
	return nil
}

func listQuoted(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(n))
	}
	return b.String()
}

// cleanStale handles what killed runs of the output at final left behind.
// The caller holds final's lock, so no live run owns these names.
func cleanStale(final string, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(final)
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	defer d.Close()
	var names []string
	for {
		batch, err := d.Readdirnames(4096)
		for _, n := range batch {
			if strings.HasPrefix(n, ".") {
				names = append(names, n)
			}
		}
		if err != nil {
			break
		}
	}
	for _, target := range []string{final} {
		base := "." + filepath.Base(target)
		for _, n := range names {
			p := filepath.Join(dir, n)
			switch {
			case strings.HasPrefix(n, base+".old-"):
				recoverAside(target, p, log)
			case strings.HasPrefix(n, base+".tmp-"):
				removeTemp(p, log)
			case strings.HasPrefix(n, base+".done-"):
				// A finished parts directory whose removal was interrupted.
				if err := removeOwnDir(filepath.Join(p, "parts")); err == nil || errors.Is(err, fs.ErrNotExist) {
					os.Remove(p)
				}
			}
		}
	}
}

// recoverAside handles ".<base>.old-*": the previous output that a replace
// moved aside. If the replace never completed (nothing at target), the old
// output goes back; otherwise it was already superseded and is removed.
func recoverAside(target, aside string, log *slog.Logger) {
	old := filepath.Join(aside, "old")
	info, err := os.Lstat(old)
	if err != nil {
		if os.Remove(aside) == nil {
			log.Info("removed an empty directory left by an interrupted replace", "path", aside)
		}
		return
	}
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(old, target); err != nil {
			log.Warn("an earlier run was killed while replacing the output; the previous output is kept here", "path", old, "err", err)
			return
		}
		os.Remove(aside)
		log.Warn("an earlier run was killed while replacing the output; the previous output was put back", "path", target)
		return
	}
	if err := replaceable(old, info, nil); err != nil {
		log.Warn("left in place: not recognised as an esm2go output", "path", old, "err", err)
		return
	}
	if err := os.RemoveAll(aside); err != nil {
		log.Warn("could not remove the old output of an earlier replace", "path", aside, "err", err)
		return
	}
	log.Info("removed the old output of an earlier replace that was killed before cleaning up", "path", aside)
}

// removeTemp removes ".<base>.tmp-*", an incomplete output of a killed run
// (never valid: a parquet file without its footer, npy arrays without final
// headers), once it looks like one: a regular file, or a directory of
// regular files with the layout's extensions.
func removeTemp(p string, log *slog.Logger) {
	info, err := os.Lstat(p)
	if err != nil {
		return
	}
	size := info.Size()
	if info.IsDir() {
		ents, err := os.ReadDir(p)
		if err != nil {
			return
		}
		size = 0
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			manifest := strings.HasPrefix(e.Name(), ".manifest.json.tmp-") // a parts directory being created
			if !e.Type().IsRegular() || (ext != ".npy" && ext != ".tsv" && ext != ".json" && !manifest) {
				log.Warn("left in place: an unfinished output of an earlier run holds unexpected entries", "path", p)
				return
			}
			if fi, err := e.Info(); err == nil {
				size += fi.Size()
			}
		}
	} else if !info.Mode().IsRegular() {
		return
	}
	if err := os.RemoveAll(p); err != nil {
		log.Warn("could not remove the unfinished output of an earlier run", "path", p, "err", err)
		return
	}
	log.Warn("removed the unfinished output of an earlier run that was killed", "path", p, "bytes", size)
}
