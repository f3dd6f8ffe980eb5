package embed

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/internal/memcap"
	"github.com/esm2go/esm2go/output"
)

// longRecord streams ">big\n" then n residues (60 per line), then a short
// record.
type longRecord struct {
	n, sent int
	head    string
	tail    string
}

// longPattern is one period of longRecord's body: byte i is '\n' when
// i%61 == 60, else residue i%20; the period is lcm(61, 20).
const longPeriod = 61 * 20

var longPattern = func() []byte {
	p := make([]byte, longPeriod)
	for i := range p {
		if i%61 == 60 {
			p[i] = '\n'
		} else {
			p[i] = "ACDEFGHIKLMNPQRSTVWY"[i%20]
		}
	}
	return p
}()

func (r *longRecord) Read(b []byte) (int, error) {
	if r.head != "" {
		k := copy(b, r.head)
		r.head = r.head[k:]
		return k, nil
	}
	if r.sent < r.n {
		k := 0
		for k < len(b) && r.sent < r.n {
			off := r.sent % longPeriod
			c := copy(b[k:min(len(b), k+r.n-r.sent)], longPattern[off:])
			k += c
			r.sent += c
		}
		return k, nil
	}
	if r.tail != "" {
		k := copy(b, r.tail)
		r.tail = r.tail[k:]
		return k, nil
	}
	return 0, io.EOF
}

func (r *longRecord) Close() error { return nil }

// TestHugeRecordBoundedMemory: a 300 MB record is truncated while it is
// read (memory bounded by the truncation, not the record) and, without
// truncation, skipped with a reason: both under a 256 MiB cap.
func TestHugeRecordBoundedMemory(t *testing.T) {
	t.Parallel()
	memcap.Run(t, 256<<20, func(t *testing.T) {
		// The pure-Go matmul: OpenBLAS's own buffers do not start under an
		// address-space cap, and the reader's memory is what is tested.
		be := cpu.New(cpu.Options{NoBLAS: true})
		defer be.Close()
		m, err := esm.LoadModel(tinyModel, be)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for _, trunc := range []int{esm.DefaultMaxResidues, -1} {
			open := func(string) (io.ReadCloser, error) {
				return &longRecord{n: 300 << 20, head: ">big\n", tail: "\n>small\nMKTAYIAK\n"}, nil
			}
			var log strings.Builder
			out := filepath.Join(t.TempDir(), "emb")
			sum, err := Run(context.Background(), m, Options{Inputs: []string{"big.fasta"}, Out: out, Format: output.NPY,
				MaxResidues: trunc, Open: open, Log: slog.New(slog.NewTextHandler(&log, nil))})
			if err != nil {
				t.Fatalf("truncation %d: %v", trunc, err)
			}
			switch trunc {
			case -1:
				if sum.Embedded != 1 || sum.Skipped != 1 || !strings.Contains(log.String(), "longer than the") {
					t.Fatalf("no truncation: %+v\n%s", sum, log.String())
				}
			default:
				recs := readRecords(t, out)
				if sum.Embedded != 2 || len(recs) != 2 || recs[0].length != trunc || !recs[0].truncated {
					t.Fatalf("truncation %d: %+v %+v", trunc, sum, recs)
				}
			}
		}
	})
}

func TestDropCutToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"MKV": "MKV", "MK<ma": "MK", "MK<mask>": "MK<mask>", "MK<": "MK", "<mask": "", "MKVLAGKT": "MKVLAGKT"} {
		if got := string(dropCutToken([]byte(in))); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
