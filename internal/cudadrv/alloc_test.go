//go:build cgo

package cudadrv

import "testing"

func TestSizeClass(t *testing.T) {
	for _, c := range []struct{ in, want int }{
		{1, 512}, {512, 512}, {513, 1024}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {5 << 20, 6 << 20}, {6 << 20, 6 << 20},
	} {
		if got := sizeClass(c.in); got != c.want {
			t.Errorf("sizeClass(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}
