package data

import (
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestShards: for any number of shards, every record of the input is read
// by exactly one shard, and the shards in order give the input in order:
// plain files split at any byte, gzip files whole, small blocks so that a
// shard spans several ranges.
func TestShards(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	var inputs []string
	id := 0
	for f := 0; f < 4; f++ {
		var b strings.Builder
		if f == 0 {
			b.WriteString("; a preamble line\n")
		}
		for k := 0; k < 40+r.IntN(60); k++ {
			fmt.Fprintf(&b, ">r%d desc\n", id)
			id++
			n := r.IntN(300)
			for i := 0; i < n; i++ {
				b.WriteByte("ACDEFGHIKLMNPQRSTVWY"[r.IntN(20)])
				if i%60 == 59 {
					b.WriteByte('\n')
				}
			}
			b.WriteByte('\n')
		}
		name := filepath.Join(dir, fmt.Sprintf("in%d.fasta", f))
		if f == 2 { // gzip: never split
			name += ".gz"
			fh, _ := os.Create(name)
			zw := gzip.NewWriter(fh)
			zw.Write([]byte(b.String()))
			zw.Close()
			fh.Close()
		} else {
			os.WriteFile(name, []byte(b.String()), 0o644)
		}
		inputs = append(inputs, name)
	}
	opts := Options{BlockBytes: 512}
	all, err := readAll(t, inputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	key := func(rec Record) string { return rec.Source + "|" + rec.ID + "|" + string(rec.Seq) + "|" + rec.Problem }
	for _, n := range []int{1, 2, 3, 5, 8, 64} {
		var joined []string
		for i := 0; i < n; i++ {
			o := opts
			o.Shard = Shard{Index: i, Count: n}
			recs, err := readAll(t, inputs, o)
			if err != nil {
				t.Fatalf("shard %d/%d: %v", i, n, err)
			}
			for _, rec := range recs {
				joined = append(joined, key(rec))
			}
		}
		if len(joined) != len(all) {
			t.Fatalf("%d shards read %d records, the whole input has %d", n, len(joined), len(all))
		}
		for k := range all {
			if joined[k] != key(all[k]) {
				t.Fatalf("%d shards: record %d is %q, want %q", n, k, joined[k], key(all[k]))
			}
		}
	}
	if _, err := readAll(t, append(inputs, "-"), Options{Shard: Shard{0, 2}}); err == nil || !strings.Contains(err.Error(), "standard input") {
		t.Fatalf("stdin sharded: %v", err)
	}
}

// TestShardLines: a record read by a shard whose part of the file starts
// past its first byte reports, through Reader.Line, the same line as in an
// unsharded read: LF, CRLF and lone-CR files, blank lines, records split
// over several lines, many shards and small blocks (so that a shard's part
// starts anywhere, a CR of a CRLF just before it included).
func TestShardLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		var b strings.Builder
		for k := 0; k < 80; k++ {
			fmt.Fprintf(&b, ">r%d%s", k, eol)
			for l := r.IntN(4); l >= 0; l-- {
				b.WriteString(strings.Repeat("ACDEFGHIK"[:1+r.IntN(9)], 1+r.IntN(30)))
				b.WriteString(eol)
			}
			if r.IntN(4) == 0 {
				b.WriteString(eol) // a blank line
			}
		}
		name := filepath.Join(dir, fmt.Sprintf("eol%d.fasta", len(eol)+strings.Count(eol, "\r")))
		if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		whole, err := readAll(t, []string{name}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{}
		for _, rec := range whole {
			want[rec.ID] = rec.Line
		}
		for _, n := range []int{2, 3, 7, 19} {
			for i := 0; i < n; i++ {
				rd, err := Open(t.Context(), []string{name}, Options{BlockBytes: 64, Shard: Shard{Index: i, Count: n}})
				if err != nil {
					t.Fatal(err)
				}
				for {
					blk, err := rd.Next(t.Context())
					if err != nil {
						break
					}
					for k := range blk.Records {
						rec := &blk.Records[k]
						got, err := rd.Line(rec)
						if err != nil || got != want[rec.ID] {
							t.Errorf("%q endings, shard %d/%d: record %s at line %d (from byte %d, relative %d), want %d (%v)",
								eol, i, n, rec.ID, got, rec.LineFrom, rec.Line, want[rec.ID], err)
						}
					}
				}
				rd.Close()
			}
		}
	}
}
