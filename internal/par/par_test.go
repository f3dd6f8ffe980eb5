package par

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// Every index of [0, n) is covered exactly once, in pieces no smaller than
// least (but the last), and no more pieces than GOMAXPROCS.
func TestDoCoversOnce(t *testing.T) {
	for _, procs := range []int{1, 3, 8} {
		old := runtime.GOMAXPROCS(procs)
		for _, n := range []int{0, 1, 99, 100, 101, 999, 4096, 10007} {
			const least = 100
			hits := make([]atomic.Int32, n)
			var calls atomic.Int32
			Do(n, least, func(lo, hi int) {
				calls.Add(1)
				if hi-lo < least && hi != n {
					t.Errorf("procs %d n %d: piece [%d,%d) smaller than %d", procs, n, lo, hi, least)
				}
				for i := lo; i < hi; i++ {
					hits[i].Add(1)
				}
			})
			for i := range hits {
				if h := hits[i].Load(); h != 1 {
					t.Fatalf("procs %d n %d: index %d covered %d times", procs, n, i, h)
				}
			}
			if c := int(calls.Load()); c > max(1, procs) || c != Pieces(n, least) {
				t.Errorf("procs %d n %d: %d pieces, Pieces says %d", procs, n, c, Pieces(n, least))
			}
		}
		runtime.GOMAXPROCS(old)
	}
}
