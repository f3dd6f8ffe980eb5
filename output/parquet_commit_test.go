package output

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// failingDst accepts limit bytes, then fails every write; it counts the
// writes it was asked for after the first failure.
type failingDst struct {
	mu         sync.Mutex
	n, limit   int
	failed     bool
	afterFails int
}

var errDiskFull = errors.New("no space left on device")

func (d *failingDst) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed {
		d.afterFails++
		return 0, errDiskFull
	}
	if d.n+len(b) > d.limit {
		d.failed = true
		return 0, errDiskFull
	}
	d.n += len(b)
	return len(b), nil
}

// Row groups are written by the committer goroutine: a write that fails
// there comes back from a later Write or from Close, names the cause, and
// nothing more is written to the destination after it; the writer's
// goroutines end (Close returns).
func TestParquetCommitFailure(t *testing.T) {
	rows := testRows(testSchema)
	for _, limit := range []int{0, 100, 2000, 20000} {
		dst := &failingDst{limit: limit}
		w, err := newParquetStream(owner{final: "stream.parquet"}, dst, testSchema, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.maxGroupRows = 1
		var werr error
		for i := 0; i < 200 && werr == nil; i++ {
			r := rows[i%len(rows)]
			r.Index = int64(i)
			werr = w.Write(&r)
		}
		cerr := w.Close()
		err = errors.Join(werr, cerr)
		if !errors.Is(err, errDiskFull) || !strings.Contains(err.Error(), "stream.parquet") {
			t.Errorf("limit %d: Write %v, Close %v; want the destination's error naming the file", limit, werr, cerr)
		}
		if dst.afterFails > 0 {
			t.Errorf("limit %d: %d writes after the first failure", limit, dst.afterFails)
		}
		if w.jobs != nil || w.commits != nil {
			t.Errorf("limit %d: goroutines left running", limit)
		}
	}
}
