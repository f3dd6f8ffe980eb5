package embed

import (
	"fmt"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/output"
)

// windowed reports whether rec is one window of a record cut in several.
func (r *recMeta) windowed() bool { return r.parts > 1 }

// colSize is how many floats column col holds for rec in a result: D for a
// vector, length*D for a matrix; a window's mean column carries its
// per-residue rows (the record's mean is taken over the averaged rows).
func colSize(col column, rec *recMeta) int {
	if col.Kind == output.Matrix || (col.kind == esm.Mean && rec.windowed()) {
		return col.Dim * rec.length
	}
	return col.Dim
}

// assembler collects the windows of long records (writer goroutine only)
// and turns each complete set into one row.
type assembler struct {
	cols []column
	recs map[int64]*assembly // by input index
}

// assembly is one record's windows received so far.
type assembly struct {
	id     string
	total  int           // residues of the record
	got    int           // windows received
	starts []int         // (parts) first residue of each window
	lens   []int         // (parts) residues of each window
	vals   [][][]float32 // (parts)(cols) a copy of each window's values
}

func newAssembler(cols []column) *assembler {
	return &assembler{cols: cols, recs: map[int64]*assembly{}}
}

// pending is the number of records with some windows still missing.
func (a *assembler) pending() int { return len(a.recs) }

// add stores one window's values (vals[c], colSize floats each; copied) and
// returns the record's row once its last window is in, else nil.
func (a *assembler) add(rec *recMeta, vals [][]float32) (*output.Row, error) {
	as := a.recs[rec.index]
	if as == nil {
		as = &assembly{id: rec.id, total: rec.total, starts: make([]int, rec.parts), lens: make([]int, rec.parts),
			vals: make([][][]float32, rec.parts)}
		a.recs[rec.index] = as
	}
	if rec.part < 0 || rec.part >= len(as.vals) || as.vals[rec.part] != nil {
		return nil, fmt.Errorf("embed: internal error: window %d of %d of record %d received twice or out of range", rec.part, rec.parts, rec.index)
	}
	cp := make([][]float32, len(vals))
	for c, v := range vals {
		cp[c] = append([]float32(nil), v...)
	}
	as.vals[rec.part], as.starts[rec.part], as.lens[rec.part] = cp, rec.start, rec.length
	as.got++
	if as.got < len(as.vals) {
		return nil, nil
	}
	delete(a.recs, rec.index)
	return a.combine(rec.index, as), nil
}

// combine makes the record's row from its windows (see the policy in
// window.go): per-residue rows averaged where windows overlap, the mean
// over those rows, the windows' <cls> rows averaged.
func (a *assembler) combine(index int64, as *assembly) *output.Row {
	row := &output.Row{ID: as.id, Index: index, Length: as.total, Values: make([][]float32, len(a.cols))}
	perRes := map[int][]float32{} // layer -> (total, D) averaged rows
	for c, col := range a.cols {
		D := col.Dim
		switch col.kind {
		case esm.PerTok, esm.Mean:
			avg, ok := perRes[col.layer]
			if !ok {
				avg = a.average(as, c, D)
				perRes[col.layer] = avg
			}
			if col.kind == esm.PerTok {
				row.Values[c] = avg
				continue
			}
			acc := make([]float64, D)
			for r := 0; r < as.total; r++ {
				for d, x := range avg[r*D : (r+1)*D] {
					acc[d] += float64(x)
				}
			}
			row.Values[c] = meanOf(acc, as.total)
		case esm.BOS:
			acc := make([]float64, D)
			for _, v := range as.vals {
				for d, x := range v[c] {
					acc[d] += float64(x)
				}
			}
			row.Values[c] = meanOf(acc, len(as.vals))
		}
	}
	return row
}

// average returns the (total, D) per-residue rows of column c (a per-token
// or mean column: both carry a window's per-residue rows): each residue's
// rows in the windows that hold it, summed in float64 in window order and
// divided by their count. Windows are in residue order, so those holding
// residue r are a contiguous run of them.
func (a *assembler) average(as *assembly, c, D int) []float32 {
	out := make([]float32, as.total*D)
	acc := make([]float64, D)
	first := 0 // first window that ends after r
	for r := 0; r < as.total; r++ {
		for as.starts[first]+as.lens[first] <= r {
			first++
		}
		clear(acc)
		n := 0
		for i := first; i < len(as.vals) && as.starts[i] <= r; i++ {
			off := (r - as.starts[i]) * D
			for d, x := range as.vals[i][c][off : off+D] {
				acc[d] += float64(x)
			}
			n++
		}
		dst := out[r*D : (r+1)*D]
		for d := range dst {
			dst[d] = float32(acc[d] / float64(n))
		}
	}
	return out
}

// meanOf returns acc/n rounded to float32.
func meanOf(acc []float64, n int) []float32 {
	out := make([]float32, len(acc))
	for d, s := range acc {
		out[d] = float32(s / float64(n))
	}
	return out
}
