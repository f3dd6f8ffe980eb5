package esm

import (
	"slices"
	"strings"
	"testing"
)

func TestTokenizerPolicy(t *testing.T) {
	tok := NewTokenizer(DefaultMaxResidues)
	cases := []struct {
		in      string
		want    []int32
		unknown int
		masks   int
		err     string
	}{
		{in: "MA", want: []int32{0, 20, 5, 2}},
		{in: "ma", want: []int32{0, 20, 5, 2}},
		{in: "MA*", want: []int32{0, 20, 5, 2}},
		{in: "MA**", want: []int32{0, 20, 5, 2}},
		{in: "LAGVSERTIDPKQNFYMHWCXBUZO.-", want: []int32{0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 2}},
		{in: "MJA", want: []int32{0, 20, 3, 5, 2}, unknown: 1},
		{in: "M<mask>A", want: []int32{0, 20, 32, 5, 2}, masks: 1},
		{in: "M<unk>A", want: []int32{0, 20, 3, 5, 2}},
		// Special tokens are case-insensitive, as letters are.
		{in: "M<MASK>A", want: []int32{0, 20, 32, 5, 2}, masks: 1},
		{in: "m<Mask>a<mAsK>", want: []int32{0, 20, 32, 5, 32, 2}, masks: 2},
		{in: "M<UNK>A", want: []int32{0, 20, 3, 5, 2}},
		{in: "M<mask\x1e", err: `unexpected '<'`}, // 0x1e is '>' with bit 5 cleared: not a case variant
		{in: "M<ma", err: `unexpected '<'`},
		{in: "M*A", err: `invalid character '*' at residue 2`},
		{in: "M1A", err: `invalid character '1' at residue 2`},
		{in: "M\x00A", err: `byte 0x00 at residue 2`},
		{in: "M\xc3\xa9", err: `byte 0xc3 at residue 2`},
		{in: "MKV\xef\xbb\xbf>b1MKL", err: `a UTF-8 byte order mark at residue 4: a file's start inside this record (files joined with cat?)`},
		{in: "MK\xef\xbb", err: `byte 0xef at residue 3`},
		{in: "M<cls>", err: `unexpected '<'`},
		{in: "", err: "no residues"},
		{in: "***", err: "no residues"},
	}
	for _, c := range cases {
		got, e, err := tok.Encode(nil, []byte(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one containing %q", c.in, err, c.err)
			}
			if len(got) != 0 {
				t.Errorf("%q: failed encode left %d tokens in dst", c.in, len(got))
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !slices.Equal(got, c.want) || e.Unknown != c.unknown || e.Masks != c.masks {
			t.Errorf("%q: got %v %+v, want %v unknown=%d masks=%d", c.in, got, e, c.want, c.unknown, c.masks)
		}
	}
}

func TestTokenizerTruncation(t *testing.T) {
	tok := NewTokenizer(4)
	got, e, err := tok.Encode([]int32{99}, []byte("MAGVSE"))
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{99, 0, 20, 5, 6, 7, 2}
	if !slices.Equal(got, want) || !e.Truncated || e.Residues != 6 || e.Kept != 4 {
		t.Fatalf("got %v %+v, want %v truncated 6->4", got, e, want)
	}
	// The part past the truncation point is still validated.
	if _, _, err := tok.Encode(nil, []byte("MAGVS1")); err == nil {
		t.Fatal("invalid character after the truncation point accepted")
	}
	// No truncation when disabled.
	if _, e, _ := NewTokenizer(0).Encode(nil, []byte(strings.Repeat("A", 5000))); e.Truncated || e.Kept != 5000 {
		t.Fatalf("untruncated: %+v", e)
	}
}

func TestTokenDropoutScale(t *testing.T) {
	if s := TokenDropoutScale(0, 10); s != float32(0.88) {
		t.Fatalf("no masks: %v, want 0.88", s)
	}
	// 3 masks in 125 tokens: 0.88 / (1 - 3/125)
	if s, want := TokenDropoutScale(3, 125), float32(0.88/(1-3.0/125)); s-want > 1e-7 || want-s > 1e-7 {
		t.Fatalf("3 masks: %v, want %v", s, want)
	}
}

func TestResolveLayer(t *testing.T) {
	c := Config{Layers: 6}
	for in, want := range map[int]int{-1: 6, -7: 0, 0: 0, 6: 6, 3: 3, -2: 5} {
		if got, err := c.ResolveLayer(in); err != nil || got != want {
			t.Errorf("ResolveLayer(%d) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []int{7, -8} {
		if _, err := c.ResolveLayer(bad); err == nil {
			t.Errorf("ResolveLayer(%d) accepted", bad)
		}
	}
}

func BenchmarkTokenize1000(b *testing.B) {
	tok := NewTokenizer(DefaultMaxResidues)
	seq := []byte(strings.Repeat("MKTAYIAKQR", 100))
	dst := make([]int32, 0, 1100)
	b.SetBytes(int64(len(seq)))
	for b.Loop() {
		dst, _, _ = tok.Encode(dst[:0], seq)
	}
}
