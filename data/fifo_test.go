//go:build linux

package data

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// prompt bounds how long a cancelled read may take to return. It detects a
// hang (the bug: forever), not a speed: cancellation takes microseconds, and
// a loaded CI machine may add a few seconds.
const prompt = 10 * time.Second

func mkfifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	return path
}

// openWriter opens the write end of the FIFO once a reader has it open
// (O_NONBLOCK fails with ENXIO before that), then makes it blocking.
func openWriter(path string) (*os.File, error) {
	deadline := time.Now().Add(prompt)
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == nil {
			if err := syscall.SetNonblock(fd, false); err != nil {
				syscall.Close(fd)
				return nil, err
			}
			return os.NewFile(uintptr(fd), path), nil
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			return nil, fmt.Errorf("opening %s for writing: %w", path, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustOpenWriter(t *testing.T, path string) *os.File {
	t.Helper()
	w, err := openWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// cancelled opens the inputs, cancels the run after a moment and checks that
// Next returns the cancellation promptly, and Close too.
func cancelled(t *testing.T, inputs []string, opts Options, during func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Open(ctx, inputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Next(context.Background())
		done <- err
	}()
	if during != nil {
		during()
	}
	time.Sleep(50 * time.Millisecond) // let the reader block
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next: %v, want the cancellation", err)
		}
	case <-time.After(prompt):
		t.Fatalf("Next still blocked %v after the cancellation", prompt)
	}
	closed := make(chan struct{})
	go func() {
		r.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(prompt):
		t.Fatalf("Close still blocked %v after the cancellation", prompt)
	}
}

func TestFIFONoWriter(t *testing.T) {
	checkGoroutines(t)
	cancelled(t, []string{mkfifo(t)}, Options{StallTimeout: -1}, nil)
}

func TestFIFOSilentWriter(t *testing.T) {
	checkGoroutines(t)
	path := mkfifo(t)
	var w *os.File
	cancelled(t, []string{path}, Options{StallTimeout: -1}, func() { w = mustOpenWriter(t, path) })
	w.Close()
}

// TestFIFOWriterStops: a writer that sends part of a file and then neither
// writes nor closes.
func TestFIFOWriterStops(t *testing.T) {
	checkGoroutines(t)
	path := mkfifo(t)
	var w *os.File
	cancelled(t, []string{path}, Options{StallTimeout: -1}, func() {
		w = mustOpenWriter(t, path)
		if _, err := w.Write([]byte(">a\nACD\n>b\nEF")); err != nil {
			t.Fatal(err)
		}
	})
	w.Close()
}

// TestFIFO reads FASTA from named pipes: data written in pieces, a writer
// that closes without writing (no records), then gzip, with a plain file
// between them.
func TestFIFO(t *testing.T) {
	checkGoroutines(t)
	data := trickyFASTA(5000)
	plain := writeFile(t, filepath.Join(t.TempDir(), "p.fasta"), []byte(">p\nMKV\n"))
	a, empty, z := mkfifo(t), mkfifo(t), mkfifo(t)
	writes := map[string][]byte{a: data, empty: nil, z: gzipBytes(t, data, 2)}
	errc := make(chan error, len(writes))
	for _, path := range []string{a, empty, z} {
		go func() {
			// The reader opens the pipes one after the other, so this may
			// wait for the pipes before it; openWriter gives up after prompt.
			w, err := openWriter(path)
			if err != nil {
				errc <- err
				return
			}
			defer w.Close()
			d := writes[path]
			for len(d) > 0 {
				n := min(len(d), 3000)
				if _, err := w.Write(d[:n]); err != nil {
					errc <- err
					return
				}
				d = d[n:]
			}
			errc <- nil
		}()
	}
	got, err := readAll(t, []string{a, empty, plain, z}, Options{BlockBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for range writes {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	want := refParse(a, data, 0)
	want = append(want, refParse(plain, []byte(">p\nMKV\n"), int64(len(want)))...)
	want = append(want, refParse(z, data, int64(len(want)))...)
	diffRecords(t, "fifos", got, want)
}

// blockingPipe returns a pipe whose read end is an *os.File outside Go's
// poller, as os.Stdin is when it is a pipe.
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r = os.NewFile(uintptr(fds[0]), "stdin-pipe")
	w = os.NewFile(uintptr(fds[1]), "stdin-pipe-w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func getfl(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fl int
	var ferr error
	if err := rc.Control(func(fd uintptr) { fl, ferr = fcntl(int(fd), syscall.F_GETFL, 0) }); err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	return fl
}

// TestStdinPipeCancel: stdin is a pipe whose writer never writes; the run
// is cancelled. Afterwards stdin is blocking again and still usable.
func TestStdinPipeCancel(t *testing.T) {
	checkGoroutines(t)
	r, w := blockingPipe(t)
	if getfl(t, r)&syscall.O_NONBLOCK != 0 {
		t.Fatal("the test pipe is non-blocking from the start")
	}
	cancelled(t, []string{"-"}, Options{Stdin: r, StallTimeout: -1}, nil)
	if getfl(t, r)&syscall.O_NONBLOCK != 0 {
		t.Fatal("stdin left non-blocking after Close")
	}
	// The reader did not close stdin: it still reads what comes.
	if _, err := w.Write([]byte(">after\nAC\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := readAll(t, []string{"-"}, Options{Stdin: r})
	if err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "stdin pipe", got, refParse("-", []byte(">after\nAC\n"), 0))
}

// TestStdinPipe reads a whole file through a blocking pipe on stdin.
func TestStdinPipe(t *testing.T) {
	checkGoroutines(t)
	r, w := blockingPipe(t)
	data := trickyFASTA(20000)
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		w.Close()
		errc <- err
	}()
	got, err := readAll(t, []string{"-"}, Options{Stdin: r, BlockBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "stdin pipe", got, refParse("-", data, 0))
}
