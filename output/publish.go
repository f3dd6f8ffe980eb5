package output

import (
	"errors"
	"fmt"
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
// A crash before step 3 leaves only a dot-prefixed temporary; the final path
// never holds a partial output. With Overwrite, a file replaces a file in one
// rename; a directory (or a change of kind) first moves the old output aside
// to ".<base>.old-<random>" and removes it after the new one is in place.

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
func publish(tmp, final string, overwrite bool) error {
	parent := filepath.Dir(final)
	old, err := os.Lstat(final)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		return syncDir(parent)
	case err != nil:
		return err
	case !overwrite:
		// The path appeared after Create. There is a small race between this
		// check and the rename; Create's check catches the common case.
		return fmt.Errorf("%s: %w (pass Overwrite to replace it)", final, ErrExists)
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
	// Move the old output aside under a fresh name, then swap in the new one.
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
