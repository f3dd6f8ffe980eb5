package output

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Publishing protocol shared by both formats:
//
//  1. everything is written under ".<base>.tmp-<random>" in the final
//     directory (a file for parquet, a directory for npy);
//  2. Close fsyncs every file, then the temporary directory (npy);
//  3. the temporary is renamed to the final path and the parent directory is
//     fsynced.
//
// A crash before step 3 leaves only a dot-prefixed temporary, which the next
// run on the same output removes; the final path never holds a partial
// output. A new path is taken with RENAME_NOREPLACE (no race with a path
// appearing meanwhile). With Overwrite, a file replaces a file in one rename;
// a directory (or a change of kind) is swapped in with RENAME_EXCHANGE, and
// the old output, now at the temporary name, is checked again and removed.
// Where the file system cannot exchange, the old output is first moved aside
// to ".<base>.old-<random>/old"; a crash in between is repaired by the next
// run (cleanStale puts it back).

// errRenameUnsupported: the file system cannot do an atomic exchange or a
// no-replace rename.
var errRenameUnsupported = errors.New("rename flags not supported")

type linkError struct {
	op, from, to string
	err          error
}

func (e *linkError) Error() string { return e.op + " " + e.from + " " + e.to + ": " + e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// tempPattern is the os.CreateTemp / os.MkdirTemp pattern for path.
func tempPattern(path string) (dir, pattern string) {
	return filepath.Dir(path), "." + filepath.Base(path) + ".tmp-*"
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// publish renames tmp (already fsynced) to final.
func publish(tmp, final string, opts Options) error {
	parent := filepath.Dir(final)
	old, err := os.Lstat(final)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err := renameNoReplace(tmp, final)
		if errors.Is(err, errRenameUnsupported) {
			err = os.Rename(tmp, final)
		}
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w (it appeared while this run was writing)", final, ErrExists)
		}
		if err != nil {
			return err
		}
		return syncDir(parent)
	case err != nil:
		return err
	case !opts.Overwrite:
		return fmt.Errorf("%s: %w (it appeared while this run was writing)", final, ErrExists)
	}
	if err := replaceable(final, old, opts.Keep); err != nil {
		return err
	}
	newInfo, err := os.Lstat(tmp)
	if err != nil {
		return err
	}
	if old.Mode().IsRegular() && newInfo.Mode().IsRegular() {
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		return syncDir(parent)
	}
	switch err := exchange(tmp, final); {
	case err == nil:
		// tmp now holds the old output: check it is what was checked above
		// before removing it; if it changed meanwhile, swap back.
		if info, lerr := os.Lstat(tmp); lerr != nil || replaceable(tmp, info, opts.Keep) != nil {
			if berr := exchange(tmp, final); berr != nil {
				return fmt.Errorf("%s changed while it was being replaced; the new output is at %s and what was there is at %s", final, final, tmp)
			}
			return fmt.Errorf("%s changed while it was being replaced; it was left as it is: %w", final, ErrNotReplaceable)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
		return os.RemoveAll(tmp)
	case !errors.Is(err, errRenameUnsupported):
		return err
	}
	// No exchange on this file system: move the old output aside under a
	// fresh name, then rename the new one into place.
	aside, err := os.MkdirTemp(parent, "."+filepath.Base(final)+".old-*")
	if err != nil {
		return err
	}
	asideEntry := filepath.Join(aside, "old")
	if err := os.Rename(final, asideEntry); err != nil {
		os.Remove(aside)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Put the old output back so a failed overwrite changes nothing.
		if rerr := os.Rename(asideEntry, final); rerr != nil {
			return fmt.Errorf("%w; restoring the previous output also failed (it is at %s): %v", err, asideEntry, rerr)
		}
		os.Remove(aside)
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	return os.RemoveAll(aside)
}
