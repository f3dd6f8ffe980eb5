//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// lockTemp takes an exclusive flock on a temporary output file, held until
// the file is closed (or the process dies): a later run that finds the file
// can tell a live writer's temporary from one a killed run left behind.
func lockTemp(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeStaleTemps removes the temporaries of out (".<base>.tmp-*" beside
// it, regular files) that no process holds locked: what a killed run left
// (a score scan writes its rows there as it goes, so it can be large). It
// returns their names.
func removeStaleTemps(out string) []string {
	dir, prefix := filepath.Dir(out), "."+filepath.Base(out)+".tmp-"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			// Nobody writes it. Removed while locked, so a run starting
			// now cannot take it for its own.
			if os.Remove(path) == nil {
				removed = append(removed, path)
			}
		}
		f.Close()
	}
	return removed
}

// removeStalePartials removes the temporary directories of a contacts
// output dir (".<base>.partial-*" beside it) whose values file no process
// holds locked, and that hold nothing but the files a contacts run writes:
// what a killed run left (about 4 MB a 1,022-residue record). It returns
// their names.
func removeStalePartials(dir string, known map[string]bool) []string {
	clean := filepath.Clean(dir)
	parent, prefix := filepath.Dir(clean), "."+filepath.Base(clean)+".partial-"
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || !e.IsDir() {
			continue
		}
		path := filepath.Join(parent, e.Name())
		inner, err := os.ReadDir(path)
		if err != nil {
			continue
		}
		ours := true
		for _, f := range inner {
			ours = ours && known[f.Name()] && f.Type().IsRegular()
		}
		if !ours {
			continue
		}
		f, err := os.OpenFile(filepath.Join(path, contactsValues), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue // no values file: not (yet) a run's temporary
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			for _, n := range inner {
				os.Remove(filepath.Join(path, n.Name()))
			}
			if os.Remove(path) == nil {
				removed = append(removed, path)
			}
		}
		f.Close()
	}
	return removed
}
