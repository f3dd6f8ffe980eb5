package attention

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestSeqlensValidate(t *testing.T) {
	good, err := NewSeqlens([]int{1, 5, 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Validate(9); err != nil {
		t.Fatalf("valid seqlens rejected: %v", err)
	}
	if good.N() != 3 || good.Total() != 9 || good.MaxLen() != 5 || good.Start(2) != 6 || good.Len(1) != 5 {
		t.Fatalf("accessors wrong: %+v", good)
	}
	for name, s := range map[string]Seqlens{
		"empty":        {},
		"nonzero":      {Cu: []int32{1, 3}},
		"zero-length":  {Cu: []int32{0, 2, 2, 4}},
		"decreasing":   {Cu: []int32{0, 3, 2}},
		"wrong-total":  {Cu: []int32{0, 3, 8}},
		"single-entry": {Cu: []int32{0}},
	} {
		if err := s.Validate(4); err == nil {
			t.Errorf("%s: invalid seqlens %v accepted", name, s.Cu)
		}
	}
	if _, err := NewSeqlens([]int{3, 0}); err == nil {
		t.Error("zero length accepted by NewSeqlens")
	}
}

// naive64 is an independent float64 implementation used to check Reference.
func naive64(q, k, v []float32, ld int, s Seqlens, H, hd int, scale float64) []float64 {
	D := H * hd
	out := make([]float64, s.Total()*D)
	for seq := 0; seq < s.N(); seq++ {
		st, n := s.Start(seq), s.Len(seq)
		for h := 0; h < H; h++ {
			for i := 0; i < n; i++ {
				sc := make([]float64, n)
				m := math.Inf(-1)
				for j := 0; j < n; j++ {
					for d := 0; d < hd; d++ {
						sc[j] += float64(q[(st+i)*ld+h*hd+d]) * float64(k[(st+j)*ld+h*hd+d])
					}
					sc[j] *= scale
					m = math.Max(m, sc[j])
				}
				var z float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - m)
					z += sc[j]
				}
				for j := 0; j < n; j++ {
					for d := 0; d < hd; d++ {
						out[(st+i)*D+h*hd+d] += sc[j] / z * float64(v[(st+j)*ld+h*hd+d])
					}
				}
			}
		}
	}
	return out
}

// Cases are the varlen shapes that catch real kernel bugs (STYLE.md item 5).
var Cases = map[string][]int{
	"one-token":       {1},
	"single":          {37},
	"not-tile":        {1, 65, 3, 129},
	"many-short":      {3, 1, 2, 5, 1, 4, 3, 2, 2, 1, 7, 3},
	"longest+bos/eos": {1024, 5},
}

func TestReferenceMatchesFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for name, lens := range Cases {
		for _, hd := range []int{16, 64} {
			H := 3
			s, err := NewSeqlens(lens)
			if err != nil {
				t.Fatal(err)
			}
			T, D := s.Total(), H*hd
			ld := 3 * D
			qkv := make([]float32, T*ld)
			for i := range qkv {
				qkv[i] = float32(r.NormFloat64())
			}
			out := make([]float32, T*D)
			scale := 1 / math.Sqrt(float64(hd))
			a := Args{Out: out, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: ld, Seqlens: s, H: H, HD: hd, Scale: float32(scale)}
			if err := Reference(a); err != nil {
				t.Fatal(err)
			}
			want := naive64(qkv, qkv[D:], qkv[2*D:], ld, s, H, hd, scale)
			var maxDiff, maxRef float64
			for i, w := range want {
				maxDiff = math.Max(maxDiff, math.Abs(float64(out[i])-w))
				maxRef = math.Max(maxRef, math.Abs(w))
			}
			// float32 dot products of hd unit normals and softmax over <=1024
			// keys: relative error stays near 1e-6; 1e-5 leaves margin.
			if maxDiff > 1e-5*maxRef {
				t.Errorf("%s hd=%d: max |diff| %g vs max |ref| %g", name, hd, maxDiff, maxRef)
			}
		}
	}
}

func TestReferenceLengthOneReturnsV(t *testing.T) {
	s, _ := NewSeqlens([]int{1})
	qkv := []float32{1, 2, 3, 4, 5, 6} // H=1, hd=2: q=(1,2) k=(3,4) v=(5,6)
	out := make([]float32, 2)
	if err := Reference(Args{Out: out, LdOut: 2, Q: qkv, K: qkv[2:], V: qkv[4:], Ld: 6, Seqlens: s, H: 1, HD: 2, Scale: 1}); err != nil {
		t.Fatal(err)
	}
	if out[0] != 5 || out[1] != 6 {
		t.Fatalf("one token attends only to itself: got %v, want [5 6]", out)
	}
}

func TestReferenceRejectsShortBuffers(t *testing.T) {
	s, _ := NewSeqlens([]int{4})
	qkv := make([]float32, 4*6)
	if err := Reference(Args{Out: make([]float32, 3), LdOut: 2, Q: qkv, K: qkv[2:], V: qkv[4:], Ld: 6, Seqlens: s, H: 1, HD: 2, Scale: 1}); err == nil {
		t.Fatal("short output accepted")
	}
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// checkReach fails unless got[i] is non-finite exactly where reached(i).
func checkReach(t *testing.T, what string, got []float32, reached func(i int) bool) {
	t.Helper()
	bad := 0
	for i, v := range got {
		if reached(i) == finite(v) {
			if bad++; bad <= 5 {
				t.Errorf("%s: element %d = %g, want %s", what, i, v, map[bool]string{true: "non-finite", false: "finite"}[reached(i)])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d wrong elements in all", what, bad)
	}
}

// A bad q element poisons its own query row (that head); a bad k element
// every query row of its sequence (that head); a bad v element its column
// in every query row of its sequence. Other heads and sequences stay
// finite. -Inf is no exception (see Reference).
func TestReferenceNonFinite(t *testing.T) {
	const H, HD = 2, 16
	D, ld := H*HD, 3*H*HD
	s, err := NewSeqlens([]int{5, 9, 70})
	if err != nil {
		t.Fatal(err)
	}
	T, start, n := s.Total(), s.Start(1), s.Len(1)
	inSeq := func(row int) bool { return row >= start && row < start+n }
	const tok, h, d = 3, 1, 5 // token 3 of sequence 1, head 1, dim 5
	r := rand.New(rand.NewPCG(31, 32))
	for bname, bad := range map[string]float32{"NaN": float32(math.NaN()), "+Inf": float32(math.Inf(1)), "-Inf": float32(math.Inf(-1))} {
		for part, reached := range map[int]func(row, col int) bool{
			0: func(row, col int) bool { return row == start+tok && col/HD == h },
			1: func(row, col int) bool { return inSeq(row) && col/HD == h },
			2: func(row, col int) bool { return inSeq(row) && col == h*HD+d },
		} {
			qkv := make([]float32, T*ld)
			for i := range qkv {
				qkv[i] = float32(r.NormFloat64())
			}
			qkv[(start+tok)*ld+part*D+h*HD+d] = bad
			out := make([]float32, T*D)
			if err := Reference(Args{Out: out, LdOut: D, Q: qkv, K: qkv[D:], V: qkv[2*D:], Ld: ld, Seqlens: s, H: H, HD: HD, Scale: 0.25}); err != nil {
				t.Fatal(err)
			}
			checkReach(t, fmt.Sprintf("%s in %c", bname, "qkv"[part]), out, func(i int) bool { return reached(i/D, i%D) })
		}
	}
}

// A weight that underflows to 0 in fp32 does not hide a NaN in its value.
func TestReferenceTinyWeightNaN(t *testing.T) {
	const HD = 4
	s, _ := NewSeqlens([]int{3})
	qkv := make([]float32, 3*3*HD)
	row := func(tok, part int) []float32 { return qkv[tok*3*HD+part*HD:][:HD] }
	row(0, 0)[0] = 100 // q of token 0: score 100 for key 0, -100 for keys 1, 2
	row(0, 1)[0] = 1
	row(1, 1)[0] = -1
	row(2, 1)[0] = -1
	row(1, 2)[0] = float32(math.NaN())
	row(0, 2)[1] = 1
	out := make([]float32, 3*HD)
	if err := Reference(Args{Out: out, LdOut: HD, Q: qkv, K: qkv[HD:], V: qkv[2*HD:], Ld: 3 * HD, Seqlens: s, H: 1, HD: HD, Scale: 1}); err != nil {
		t.Fatal(err)
	}
	checkReach(t, "tiny weight", out, func(i int) bool { return i%HD == 0 })
}
