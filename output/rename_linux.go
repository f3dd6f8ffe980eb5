package output

import (
	"errors"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames from to to, failing with fs.ErrExist when to
// exists, in one system call (no window between a check and the rename).
// errRenameUnsupported means the file system cannot do it.
func renameNoReplace(from, to string) error {
	return renameat2(from, to, unix.RENAME_NOREPLACE)
}

// exchange swaps from and to atomically (both must exist).
func exchange(from, to string) error {
	return renameat2(from, to, unix.RENAME_EXCHANGE)
}

func renameat2(from, to string, flags uint) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTSUP) {
		return errRenameUnsupported
	}
	if err != nil {
		return &linkError{op: "rename", from: from, to: to, err: err}
	}
	return nil
}
