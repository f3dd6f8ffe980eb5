package data

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestRandomTokens compares the reader with the reference on random inputs
// built from the bytes that matter to FASTA (line breaks, blanks, '>', junk),
// with block sizes small enough to cut anywhere.
func TestRandomTokens(t *testing.T) {
	checkGoroutines(t)
	rng := rand.New(rand.NewPCG(1, 2))
	toks := []string{">", "\n", "\r", " ", "A", "\t", "0", "\r\n", ">x y\n", "\x00", "\xff", "\v"}
	dir := t.TempDir()
	for it := range 400 {
		var b bytes.Buffer
		for range rng.IntN(400) {
			b.WriteString(toks[rng.IntN(len(toks))])
		}
		data := b.Bytes()
		bb := rng.IntN(100) + 1
		path := writeFile(t, filepath.Join(dir, fmt.Sprintf("r%d.fasta", it)), data)
		want := refParse(path, data, 0)
		for _, w := range []int{1, 3} {
			got, err := readAll(t, []string{path}, Options{Workers: w, BlockBytes: bb})
			if err != nil {
				t.Fatal(err)
			}
			diffRecords(t, fmt.Sprintf("Workers=%d BlockBytes=%d input %q", w, bb, data), got, want)
		}
		got, err := readAll(t, []string{"-"}, Options{Stdin: bytes.NewReader(data), BlockBytes: bb})
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i].Source = "-"
		}
		diffRecords(t, fmt.Sprintf("stdin BlockBytes=%d input %q", bb, data), got, want)
	}
}
