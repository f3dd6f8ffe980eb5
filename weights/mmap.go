package weights

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// errNoMap is openMapped's answer when the file cannot be mapped and
// should not be read into memory.
var errNoMap = errors.New("file cannot be memory-mapped")

// mappedFile is a whole file mapped read-only, or read into memory when mmap fails.
type mappedFile struct {
	path   string
	data   []byte
	mapped bool
}

// mapFile maps path read-only. An empty file gives an empty, unmapped slice.
func mapFile(path string) (*mappedFile, error) { return openMapped(path, true) }

// openMapped maps path read-only; when mmap fails it reads the file into
// memory if read is true, else returns errNoMap.
func openMapped(path string, read bool) (*mappedFile, error) {
	if err := regularBeforeOpen(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	size := st.Size()
	if size == 0 {
		return &mappedFile{path: path, data: []byte{}}, nil
	}
	merr := errors.New("larger than the address space")
	if int64(int(size)) == size {
		data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
		if err == nil {
			return &mappedFile{path: path, data: data, mapped: true}, nil
		}
		merr = err
	}
	if !read {
		return nil, errNoMap
	}
	// mmap failed (an unusual file system): read instead, unless the bytes
	// cannot fit either, where a failed allocation would end the process.
	if errors.Is(merr, syscall.ENOMEM) || !fitsAddressSpace(size) {
		return nil, fmt.Errorf("%s: cannot map its %d bytes (%v) nor read them into memory: is an address-space limit (ulimit -v) below the file's size?", path, size, merr)
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%s: read: %w", path, err)
	}
	return &mappedFile{path: path, data: data}, nil
}

// close unmaps the file; the bytes must not be used afterwards.
func (m *mappedFile) close() error {
	if m == nil || m.data == nil {
		return nil
	}
	var err error
	if m.mapped {
		err = syscall.Munmap(m.data)
	}
	m.data = nil
	if err != nil {
		return fmt.Errorf("%s: munmap: %w", m.path, err)
	}
	return nil
}

// regularBeforeOpen refuses a path that is not a regular file before it is
// opened: opening a FIFO blocks until a writer comes, so a named pipe in a
// model directory would hang the run.
func regularBeforeOpen(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	return nil
}

// fitsAddressSpace reports whether size bytes can be allocated within the
// process's address-space limit (RLIMIT_AS) with room to spare.
func fitsAddressSpace(size int64) bool {
	if int64(int(size)) != size {
		return false
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil || lim.Cur == ^uint64(0) { // RLIM_INFINITY
		return true
	}
	return uint64(size) < lim.Cur/2
}
