package embed

import (
	"fmt"
	"maps"
	"strconv"

	"github.com/esm2go/esm2go/esm"
)

// Long proteins: the third policy beside truncation (Options.MaxResidues,
// fair-esm's default) and whole sequences (MaxResidues < 0).
//
// With Windowing.Size = N > 0, a record of L <= N residues is embedded as
// it is (the same batch item, the same values as with MaxResidues < 0, or
// with the default truncation when N <= 1022). A longer
// record is cut into k = ceil((L-N)/(N-K)) + 1 windows of exactly N residues
// (K = Windowing.Overlap): window i starts at i*(N-K), the last one ends at
// L (so it shares at least K residues with the one before). Each window gets
// its own <cls> and <eos> and runs as its own packed sequence (positions
// restart at 0); its windows may land in different batches, even on
// different devices. The writer puts the record back together, in input
// order:
//
//   - per_tok: each residue's row is the uniform average of its rows in the
//     windows that hold it (summed in float64 in window order, divided by
//     their count, rounded once to float32; a residue in one window keeps
//     that window's row bit for bit);
//   - mean: the mean over the L averaged per-residue rows (float64 sum);
//   - bos: the uniform average of the windows' <cls> rows.
//
// Memory: the writer holds one record's windows until the last arrives
// (about L*N/(N-K) rows of D floats per per-token or mean column), so
// windowed records are limited to MaxWindowedResidues residues; longer ones
// are skipped (or, with Strict, end the run).

// Windowing is the overlapping-window policy for records longer than Size
// residues. The zero value is off.
type Windowing struct {
	Size    int // residues per window, e.g. 1022 (fair-esm's truncation length); 0 = off
	Overlap int // residues shared by consecutive windows: 0 <= Overlap < Size
}

// MaxWindowedResidues is the longest record (residues) embedded in windows:
// 128k, almost four times titin (~35k). Memory for one such record in the
// writer is about 128k*D*4 bytes times N/(N-K) per per-token or mean column
// (0.9 GB at D = 1280, N = 1022, K = 256).
const MaxWindowedResidues = 1 << 17

// On reports whether windows are used.
func (w Windowing) On() bool { return w.Size > 0 }

// Validate checks the policy: Size > 0 and 0 <= Overlap < Size, or off.
func (w Windowing) Validate() error {
	switch {
	case w == Windowing{}:
		return nil
	case w.Size <= 0:
		return fmt.Errorf("window of %d residues (want > 0)", w.Size)
	case w.Size > MaxWindowedResidues:
		return fmt.Errorf("window of %d residues is longer than the longest windowed record (%d)", w.Size, MaxWindowedResidues)
	case w.Overlap < 0 || w.Overlap >= w.Size:
		return fmt.Errorf("window overlap of %d residues (want 0 <= overlap < window %d)", w.Overlap, w.Size)
	}
	return nil
}

// Count is the number of windows of a record of n residues: 1 when n <=
// Size (or windows are off).
func (w Windowing) Count(n int) int {
	if !w.On() || n <= w.Size {
		return 1
	}
	stride := w.Size - w.Overlap
	return (n-w.Size+stride-1)/stride + 1
}

// Span returns window i of k (Count(n)) of a record of n residues, as the
// residues [start, end) it holds (0-based).
func (w Windowing) Span(i, k, n int) (start, end int) {
	if k == 1 {
		return 0, n
	}
	start = i * (w.Size - w.Overlap)
	if i == k-1 {
		start = n - w.Size
	}
	return start, start + w.Size
}

// prepareWindowing checks Windowing against the truncation and records the
// policy in the run's metadata and identity (a windowed run never resumes,
// or merges with, a run without windows or with other windows).
func (o *Options) prepareWindowing() error {
	if err := o.Windowing.Validate(); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	if !o.Windowing.On() {
		return nil
	}
	if o.MaxResidues > 0 {
		return fmt.Errorf("embed: windows of %d residues and truncation to %d residues are exclusive (windows embed the whole protein): leave MaxResidues 0",
			o.Windowing.Size, o.MaxResidues)
	}
	o.MaxResidues = -1
	o.Metadata = withWindowKeys(o.Metadata, o.Windowing)
	o.Identity = withWindowKeys(o.Identity, o.Windowing)
	return nil
}

// Metadata and identity keys of a windowed run.
const (
	MetaWindow        = "window"         // residues per window
	MetaWindowOverlap = "window_overlap" // residues shared by consecutive windows
)

func withWindowKeys(m map[string]string, w Windowing) map[string]string {
	m = maps.Clone(m)
	if m == nil {
		m = map[string]string{}
	}
	m[MetaWindow] = strconv.Itoa(w.Size)
	m[MetaWindowOverlap] = strconv.Itoa(w.Overlap)
	return m
}

// checkWindowFits fails when a window plus <cls>/<eos> is longer than the
// longest sequence a device embeds whole.
func (p *pipeline) checkWindowFits() error {
	if !p.o.Windowing.On() {
		return nil
	}
	for _, w := range p.workers {
		if p.o.Windowing.Size+2 > w.maxSeq {
			return fmt.Errorf("embed: device %s embeds at most %d tokens in one sequence; a window of %d residues needs %d",
				w.dev.Name, w.maxSeq, p.o.Windowing.Size, p.o.Windowing.Size+2)
		}
	}
	return nil
}

// windowItems appends the windows of one tokenized record (rec: <cls>,
// e.Kept residue tokens, <eos>) to arena and window. rec must not alias
// arena's free capacity (the caller copies it out first).
func (p *pipeline) windowItems(arena []int32, window []item, rec []int32, meta recMeta) ([]int32, []item, int) {
	L := len(rec) - 2
	res := rec[1 : 1+L]
	k := p.o.Windowing.Count(L)
	toks := 0
	for i := range k {
		s, e := p.o.Windowing.Span(i, k, L)
		n0 := len(arena)
		arena = append(arena, esm.TokCLS)
		arena = append(arena, res[s:e]...)
		arena = append(arena, esm.TokEOS)
		masks := 0
		for _, t := range res[s:e] {
			if t == esm.TokMask {
				masks++
			}
		}
		m := meta
		m.length, m.part, m.parts, m.start, m.total = e-s, i, k, s, L
		window = append(window, item{meta: m, toks: arena[n0:len(arena):len(arena)], masks: masks})
		toks += len(arena) - n0
	}
	return arena, window, toks
}

// windowTooLong is the reason a record too long for windows is skipped.
func windowTooLong(size string) string {
	return fmt.Sprintf("%s, longer than the %d residues a record embedded in windows may have", size, MaxWindowedResidues)
}
