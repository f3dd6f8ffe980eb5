package output

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing bytes [off, off+n) of
// the file rc controls to the disk now, without waiting (sync_file_range, SYNC_FILE_RANGE_WRITE).
// Otherwise the pages wait in the page cache until the commit's fsync,
// and the disk idles while a chunk is produced, then the run waits for
// the whole chunk to reach it. Errors are ignored: the fsync reports any.
func startWriteback(rc syscall.RawConn, off, n int64) {
	if rc == nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
