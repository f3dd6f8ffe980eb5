//go:build linux

package data

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// openInput opens a named input for reading. A named pipe is opened with
// O_NONBLOCK, so open(2) returns at once even when no writer has it open
// (a plain open would block in the kernel, beyond the reach of
// cancellation); its first Read then waits in Go's poller until a writer
// writes or closes, and Close interrupts that wait like any read.
func openInput(name string) (io.ReadCloser, error) {
	fi, err := os.Stat(name)
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		return os.Open(name)
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err = f.Stat(); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		f.Close() // replaced since the Stat: open it the ordinary way
		return os.Open(name)
	}
	return &fifoReader{f: f}, nil
}

// fifoReader reads a named pipe opened with O_NONBLOCK.
type fifoReader struct {
	f         *os.File
	connected bool
}

func (p *fifoReader) Read(b []byte) (int, error) {
	if !p.connected {
		// Until a writer has come, read(2) says end of file; poll(2) only
		// says readable once a writer wrote, or came and closed (Linux
		// reports no hang-up before a writer was seen on a pipe opened with
		// O_NONBLOCK), so wait for that first.
		if err := waitReadable(p.f); err != nil {
			return 0, err
		}
		p.connected = true
	}
	return p.f.Read(b)
}

func (p *fifoReader) Close() error { return p.f.Close() }

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn  = 0x1
	pollErr = 0x8
	pollHup = 0x10
)

// waitReadable waits in Go's poller until f has data, an error or a
// hang-up; closing f ends the wait with an error.
func waitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		pfd := pollFd{fd: int32(fd), events: pollIn}
		var ts syscall.Timespec // zero: do not block
		for {
			_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
			if e == syscall.EINTR {
				continue
			}
			if e != 0 {
				perr = e
				return true
			}
			return pfd.revents&(pollIn|pollErr|pollHup) != 0
		}
	})
	if err != nil {
		return err
	}
	return perr
}

func fcntl(fd, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// pollableStdin returns a reader of f that Close interrupts, when f is a
// pipe or a socket: a duplicate of its descriptor in non-blocking mode, read
// through Go's poller (os.Stdin is not in the poller, and closing a
// descriptor does not end a read(2) blocked on it). The non-blocking flag is
// shared with f while the reader is open; Close puts f's flags back. Other
// kinds of f (a terminal, a regular file) give false.
func pollableStdin(f *os.File) (io.ReadCloser, bool) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(fs.ModeNamedPipe|fs.ModeSocket) == 0 {
		return nil, false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, false
	}
	rd, ctl, flags := -1, -1, 0
	cerr := rc.Control(func(fd uintptr) {
		var err error
		if flags, err = fcntl(int(fd), syscall.F_GETFL, 0); err != nil {
			return
		}
		rd, _ = fcntl(int(fd), syscall.F_DUPFD_CLOEXEC, 0)
		ctl, _ = fcntl(int(fd), syscall.F_DUPFD_CLOEXEC, 0)
	})
	fail := func() (io.ReadCloser, bool) {
		for _, fd := range []int{rd, ctl} {
			if fd >= 0 {
				syscall.Close(fd)
			}
		}
		return nil, false
	}
	if cerr != nil || rd < 0 || ctl < 0 {
		return fail()
	}
	if flags&syscall.O_NONBLOCK == 0 {
		if err := syscall.SetNonblock(rd, true); err != nil {
			return fail()
		}
	}
	return &stdinReader{f: os.NewFile(uintptr(rd), f.Name()), ctl: ctl, flags: flags}, true
}

// stdinReader reads a pipe or socket on stdin through Go's poller.
type stdinReader struct {
	f     *os.File // non-blocking duplicate: NewFile puts it in the poller
	ctl   int      // another duplicate, never read: restores the flags after f is closed
	flags int      // the file status flags before
	once  sync.Once
}

func (s *stdinReader) Read(b []byte) (int, error) { return s.f.Read(b) }

func (s *stdinReader) Close() error {
	err := s.f.Close() // ends a Read waiting in the poller, then closes
	s.once.Do(func() {
		fcntl(s.ctl, syscall.F_SETFL, s.flags) // best effort: the run is over either way
		syscall.Close(s.ctl)
	})
	return err
}
