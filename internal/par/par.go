// Package par splits per-element work on large slices over the CPUs.
package par

import (
	"runtime"
	"sync"
)

// Pieces is how many pieces n elements are cut into when no piece may be
// smaller than least elements: at most GOMAXPROCS, at least 1.
func Pieces(n, least int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n/max(least, 1)))
}

// Do calls do on consecutive ranges covering [0, n), Pieces(n, least) of
// them at once (the first on the caller's goroutine), and returns when all
// have returned.
func Do(n, least int, do func(lo, hi int)) {
	p := Pieces(n, least)
	if p == 1 {
		do(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + p - 1) / p
	for lo := step; lo < n; lo += step {
		wg.Go(func() { do(lo, min(lo+step, n)) })
	}
	do(0, min(step, n))
	wg.Wait()
}
