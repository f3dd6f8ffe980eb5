//go:build unix

package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
	var removed []string
	for _, e := range siblings(out, ".tmp-") {
		path := filepath.Join(filepath.Dir(out), e.Name())
		if e.Type().IsRegular() && whileUnlocked(path, func() bool { return os.Remove(path) == nil }) {
			removed = append(removed, path)
		}
	}
	return removed
}

// removeStalePartials removes the temporary directories of a contacts
// output dir (".<base>.partial-*" beside it) whose values file no process
// holds locked, and that hold nothing but contactsFiles: what a killed run
// left (about 4 MB a 1,022-residue record). It returns their names.
func removeStalePartials(dir string) []string {
	clean := filepath.Clean(dir)
	var removed []string
	for _, e := range siblings(clean, ".partial-") {
		path := filepath.Join(filepath.Dir(clean), e.Name())
		inner, err := os.ReadDir(path)
		if !e.IsDir() || err != nil || slices.ContainsFunc(inner, func(f fs.DirEntry) bool {
			return !contactsFiles[f.Name()] || !f.Type().IsRegular()
		}) {
			continue
		}
		// Without a values file (not yet a run's temporary) it stays.
		if whileUnlocked(filepath.Join(path, contactsValues), func() bool {
			for _, n := range inner {
				os.Remove(filepath.Join(path, n.Name()))
			}
			return os.Remove(path) == nil
		}) {
			removed = append(removed, path)
		}
	}
	return removed
}

// siblings lists the entries beside out named ".<base of out><infix>...".
func siblings(out, infix string) []fs.DirEntry {
	ents, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		return nil
	}
	prefix := "." + filepath.Base(out) + infix
	return slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return !strings.HasPrefix(e.Name(), prefix) })
}

// whileUnlocked runs remove while holding an exclusive flock on file, if
// no process holds one (a live writer does: the temporary is then not
// stale), and reports whether remove ran and succeeded. Removing while
// locked keeps a run starting now from taking the file for its own.
func whileUnlocked(file string, remove func() bool) bool {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false
	}
	return remove()
}
