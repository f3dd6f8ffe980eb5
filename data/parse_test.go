package data

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestWordHelpers checks the 8-bytes-at-a-time helpers against byte loops:
// every byte value in every lane position, beside every other value, and
// random buffers of all lengths (the tails).
func TestWordHelpers(t *testing.T) {
	naiveCount := func(b []byte) int {
		n := 0
		for _, c := range b {
			if !strings.ContainsRune(" \t\v\f\r\n", rune(c)) {
				n++
			}
		}
		return n
	}
	naiveSkip := func(b []byte, i int) int {
		for i < len(b) && isBlank(b[i]) {
			i++
		}
		return i
	}
	buf := make([]byte, 40) // one 32-byte step, one word, no tail
	// Every value c against the values d where a lane test could go wrong:
	// the whitespace bytes and their neighbours, with and without the high
	// bit, and the extremes.
	ds := []int{0, 8, 9, 10, 11, 12, 13, 14, 31, 32, 33, 'A', '>', 0x7f, 0x80, 0x89, 0x8a, 0xa0, 0xff}
	for c := range 256 {
		for _, d := range ds {
			for pos := range 9 {
				for i := range buf {
					buf[i] = byte(d)
				}
				buf[pos] = byte(c)
				if got, want := countResidues(buf), naiveCount(buf); got != want {
					t.Fatalf("countResidues(%q) = %d, want %d", buf, got, want)
				}
				if got, want := skipBlanks(buf, 0), naiveSkip(buf, 0); got != want {
					t.Fatalf("skipBlanks(%q) = %d, want %d", buf, got, want)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	alpha := []byte(" \t\v\f\r\nAC>\x00\xff")
	for range 3000 {
		b := make([]byte, rng.IntN(100))
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		if got, want := countResidues(b), naiveCount(b); got != want {
			t.Fatalf("countResidues(%q) = %d, want %d", b, got, want)
		}
		from := rng.IntN(len(b) + 1)
		if got, want := skipBlanks(b, from), naiveSkip(b, from); got != want {
			t.Fatalf("skipBlanks(%q, %d) = %d, want %d", b, from, got, want)
		}
		var want []byte
		for _, c := range b {
			if keepTable[c] == 1 {
				want = append(want, c)
			}
		}
		for _, room := range []int{-1, 0, 1, 5, len(b), rng.IntN(len(b) + 1)} {
			prefix := []byte("xy")
			got, n := appendResidues(bytes.Clone(prefix), b, room)
			w := want
			if room >= 0 && len(w) > room {
				w = w[:room]
			}
			if n != len(want) || !bytes.Equal(got, append(prefix, w...)) {
				t.Fatalf("appendResidues(%q, room %d) = %q, %d; want %q, %d", b, room, got, n, append(prefix, w...), len(want))
			}
		}
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("P12345 \"x\""); got != `"P12345 \"x\""` {
		t.Errorf("short: %s", got)
	}
	long := strings.Repeat("é", 150) // 300 bytes: the cut at 200 falls on a rune boundary
	got := Quote(long)
	if want := `"` + strings.Repeat("é", 100) + `"... (100 more bytes)`; got != want {
		t.Errorf("long: %s", got)
	}
	odd := "x" + strings.Repeat("é", 150) // 301 bytes: the cut at 200 falls inside a rune
	got = Quote(odd)
	if want := `"x` + strings.Repeat("é", 99) + `"... (102 more bytes)`; got != want || !utf8.ValidString(got) {
		t.Errorf("odd: %s", got)
	}
}
