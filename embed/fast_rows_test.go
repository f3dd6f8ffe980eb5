package embed

import (
	"slices"
	"testing"
)

// TestRowBufs: a clone holds the row's values in a buffer of its size
// class; a released buffer serves the next clone of that class (not of
// another); buffers past the limit, and buffers clone did not make, are
// not kept.
func TestRowBufs(t *testing.T) {
	b := newRowBufs(4 * 3 << 16) // room for three 64 Ki-float buffers
	v := make([]float32, 1000)
	for i := range v {
		v[i] = float32(i)
	}
	c1 := b.clone(v)
	if !slices.Equal(c1, v) || cap(c1) != 1<<16 {
		t.Fatalf("clone: %d values (cap %d), equal %v", len(c1), cap(c1), slices.Equal(c1, v))
	}
	if b.clone(nil) != nil {
		t.Error("clone of no values is not nil")
	}
	b.release(c1)
	w := make([]float32, 2000)
	c2 := b.clone(w)
	if &c2[0] != &c1[0] || !slices.Equal(c2, w) {
		t.Error("a released buffer was not reused for a row of its class")
	}
	big := make([]float32, 1<<16+1)
	if c3 := b.clone(big); cap(c3) != 2<<16 || !slices.Equal(c3, big) {
		t.Errorf("a row of 64 Ki + 1 floats: cap %d", cap(c3))
	} else {
		b.release(c3) // 2 classes' worth
	}
	b.release(c2)         // 3: at the limit
	b.release(b.clone(v)) // the buffer just taken back comes back again
	extra := make([]float32, 10, 1<<16)
	b.release(extra) // over the limit: left to the GC
	if b.bytes != 4*3<<16 {
		t.Errorf("%d bytes kept, want %d (the limit)", b.bytes, 4*3<<16)
	}
	b2 := newRowBufs(1 << 30)
	b2.release(make([]float32, 10, 1000)) // not a class size: not clone's
	if b2.bytes != 0 {
		t.Errorf("a buffer of another size was kept (%d bytes)", b2.bytes)
	}
}
