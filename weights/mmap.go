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
	if int64(int(size)) == size {
		data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
		if err == nil {
			return &mappedFile{path: path, data: data, mapped: true}, nil
		}
	}
	if !read {
		return nil, errNoMap
	}
	// mmap failed (unusual file system, 32-bit address space): read instead.
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
