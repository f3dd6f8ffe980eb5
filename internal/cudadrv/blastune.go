//go:build cgo

package cudadrv

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// GEMM tuning. cuBLASLt's heuristic ranks its algorithms by a model of the
// GPU, and for the model's GEMM shapes its first choice is often not the
// fastest: on an H200 at 65,536 tokens the 35M FC1 ran 1.31× faster on its
// seventh candidate, FC2 1.21× on its fourth, 650M's output projection
// 1.26× (BenchmarkLinearBiasAlgos). So the first LinearBias of each shape
// class times the heuristic's candidates on the call's own operands and
// keeps the fastest for the class; later calls of the class check that
// algorithm against their exact shape (cublasLtMatmulAlgoCheck) and fall
// back to the heuristic's choice where it does not apply. The choices are
// kept in a file beside the kernel cache (blastune_file.go), so a machine
// pays for the timing once.
//
// The candidates are asked for without split-K (reduction scheme mask 0),
// so whichever one runs, every output element is one dot product summed in
// one order over K, with no partial sums added in a second pass.
const (
	// ltTuneStep: a shape class is (N, K, precisions, epilogue) and T
	// rounded up to a multiple of ltTuneStep, so a run's full batches (T a
	// little under the token budget) share one tuning.
	ltTuneStep = 8192
	// ltTuneCandidates is how many algorithms the heuristic is asked for.
	ltTuneCandidates = 8
	// ltTuneMinGain: a candidate replaces the heuristic's choice only when
	// it is at least this much faster (below it, timing noise decides).
	ltTuneMinGain = 0.03
	// ltTuneRuns: timed passes over the candidates after one untimed
	// pass; each candidate's fastest run counts.
	ltTuneRuns                = 2
	ltPrefReductionSchemeMask = 3 // CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK
)

type ltTuneKey struct {
	tb, N, K int
	prec     Precision
	epilogue Epilogue
}

func tuneKeyOf(k ltKey) ltTuneKey {
	return ltTuneKey{(k.T + ltTuneStep - 1) / ltTuneStep * ltTuneStep, k.N, k.K, k.prec, k.epilogue}
}

type ltTuned struct {
	algo   C.cublasLtMatmulAlgo_t
	better bool // algo replaces the heuristic's choice
	rec    GemmTuning
}

// GemmTuning records one shape class's tuning (Context.GemmTunings).
type GemmTuning struct {
	T, N, K     int // the shape it was timed on
	Prec        Precision
	Accumulate  bool          // EpilogueBiasAccumulate
	Candidates  int           // algorithms timed, the heuristic's choice included
	Chosen      int           // index of the one kept; 0 is the heuristic's choice
	First, Best float64       // ms of the heuristic's choice and of the kept one
	Took        time.Duration // wall time of the tuning
	Skipped     string        // why nothing was timed, if so
	FromFile    bool          // read from the tuning file, not timed here
}

// GemmTunings lists the tunings done so far, in no particular order.
func (c *Context) GemmTunings() []GemmTuning {
	if c.blas == nil {
		return nil
	}
	out := make([]GemmTuning, 0, len(c.blas.tuned))
	for _, t := range c.blas.tuned {
		out = append(out, t.rec)
	}
	return out
}

// ltTune settles plan's algorithm from its shape class's tuning, timing
// the candidates on this call's operands if the class has none yet. y is
// the call's output (and its input with EpilogueBiasAccumulate, which is
// timed writing a scratch buffer instead, so y is not changed here).
func (c *Context) ltTune(b *blasState, plan *ltPlan, k ltKey, y, x, w, bias DevicePtr, desc string) error {
	plan.tuned = true
	tk := tuneKeyOf(k)
	t := b.tuned[tk]
	if t == nil {
		var err error
		if t, err = c.ltMeasure(b, plan, k, y, x, w, bias, desc); err != nil {
			return err
		}
		b.tuned[tk] = t
		c.saveTuning(b, t)
	}
	if !t.better {
		return nil
	}
	var res C.cublasLtMatmulHeuristicResult_t
	if C.esm_cublasLtMatmulAlgoCheck(b.lt, plan.desc, plan.a, plan.b, plan.c, plan.c, &t.algo, &res) == 0 &&
		res.workspaceSize <= BlasWorkspaceBytes {
		plan.algo = t.algo
	}
	return nil
}

// ltMeasure times plan's algorithm and the heuristic's other candidates.
// Errors are the GPU's (a failed launch or event); a candidate cuBLASLt
// refuses, or no memory for the scratch output, only leaves the choice to
// the heuristic.
func (c *Context) ltMeasure(b *blasState, plan *ltPlan, k ltKey, y, x, w, bias DevicePtr, desc string) (t *ltTuned, err error) {
	t0 := time.Now()
	t = &ltTuned{rec: GemmTuning{T: k.T, N: k.N, K: k.K, Prec: k.prec, Accumulate: k.epilogue == EpilogueBiasAccumulate}}
	defer func() { t.rec.Took = time.Since(t0) }()
	res, err := ltHeuristicMask(b, plan, desc, ltTuneCandidates, 0)
	if err != nil || len(res) == 0 {
		t.rec.Skipped = "no candidates without split-K"
		return t, nil
	}
	cands := []C.cublasLtMatmulAlgo_t{plan.algo}
	for _, r := range res {
		if r.algo != plan.algo && r.workspaceSize <= BlasWorkspaceBytes {
			cands = append(cands, r.algo)
		}
	}
	t.rec.Candidates = len(cands)
	if len(cands) < 2 {
		t.rec.Skipped = "one candidate"
		return t, nil
	}
	d := y
	if k.epilogue == EpilogueBiasAccumulate {
		scratch, err := c.Alloc(k.T * k.N * k.prec.Out.Size())
		if err != nil {
			if errors.Is(err, ErrOutOfMemory) {
				t.rec.Skipped = "no memory for a scratch output"
				return t, nil
			}
			return nil, err
		}
		defer func() { err = errors.Join(err, scratch.Free()) }()
		d = scratch.Ptr
	}
	start, err := c.NewEvent(true)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, start.Destroy()) }()
	end, err := c.NewEvent(true)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, end.Destroy()) }()
	// An untimed pass over the candidates (lazy loading of their kernels),
	// then ltTuneRuns timed passes, the fastest run of each counting:
	// passes rather than one candidate after another, so a clock still
	// rising favours none of them.
	times := make([]float64, len(cands))
	refused := make([]bool, len(cands))
	for i := range times {
		times[i] = math.Inf(1)
	}
	for pass := 0; pass <= ltTuneRuns; pass++ {
		for i := range cands {
			if refused[i] {
				continue
			}
			if err := start.Record(b.stream); err != nil {
				return nil, err
			}
			if c.ltMatmul(b, plan, &cands[i], d, y, x, w, bias, desc, k.epilogue) != nil {
				refused[i] = true // not a candidate for this shape
				continue
			}
			if err := end.Record(b.stream); err != nil {
				return nil, err
			}
			if err := end.Synchronize(); err != nil {
				return nil, err
			}
			ms, err := ElapsedMs(start, end)
			if err != nil {
				return nil, err
			}
			if pass > 0 {
				times[i] = min(times[i], float64(ms))
			}
		}
	}
	if math.IsInf(times[0], 1) {
		// The heuristic's own choice did not run: leave it to LinearBias
		// to report.
		t.rec.Skipped = "the heuristic's choice failed"
		return t, nil
	}
	best := 0
	for i, v := range times {
		if v < times[best] {
			best = i
		}
	}
	t.rec.First, t.rec.Best = times[0], times[best]
	if best != 0 && times[best] < (1-ltTuneMinGain)*times[0] {
		t.algo, t.better, t.rec.Chosen = cands[best], true, best
	} else {
		t.rec.Best = times[0]
	}
	return t, nil
}

// ltHeuristicMask is ltHeuristic with a reduction scheme mask (0: no
// split-K).
func ltHeuristicMask(b *blasState, p *ltPlan, desc string, n int, mask uint32) ([]C.cublasLtMatmulHeuristicResult_t, error) {
	return ltHeuristicPref(b, p, desc, n, func(pref C.cublasLtMatmulPreference_t) error {
		if r := C.esm_cublasLtMatmulPreferenceSetAttribute(pref, ltPrefReductionSchemeMask, unsafe.Pointer(&mask), 4); r != 0 {
			return blasErr("cublasLtMatmulPreferenceSetAttribute", fmt.Sprintf("REDUCTION_SCHEME_MASK = %d", mask), r)
		}
		return nil
	})
}
