package graph

import (
	"context"
	"errors"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
)

// maskedTarget is the <mask> at residue 2 of testSeqs[1], whose true
// residue is K.
var maskedTarget = Target{Seq: testSeqs[1], Pos: 2, Token: 15}

// Saliency's logit is the CPU backend's, its gradient that of a plain
// pass, and its scores the rows' L2 norms.
func TestSaliency(t *testing.T) {
	m := loadTiny(t)
	a, err := m.Saliency(maskedTarget)
	if err != nil {
		t.Fatal(err)
	}
	D, V := m.Cfg.Dim, m.Cfg.Vocab
	T := len(a.Tokens)
	if len(a.Grad) != T*D || len(a.Scores) != T {
		t.Fatalf("shapes: %d tokens, grad %d, scores %d", T, len(a.Grad), len(a.Scores))
	}
	be := cpu.New(cpu.Options{})
	defer be.Close()
	ref, err := esm.LoadModel(tinyPath, be)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	var out esm.Output
	if err := ref.Forward(batchOf(t, maskedTarget.Seq), esm.Request{Logits: true}, &out); err != nil {
		t.Fatal(err)
	}
	want := out.Logits[maskedTarget.Pos*V+int(maskedTarget.Token)]
	// forwardTol, relative to the largest logit of the row
	if d := math.Abs(float64(a.Value - want)); d > forwardTol*float64(maxAbs(out.Logits)) {
		t.Errorf("logit %g, CPU backend %g", a.Value, want)
	}
	for i := range T {
		if got, want := a.Scores[i], float32(norm(a.Grad[i*D:(i+1)*D])); got != want {
			t.Errorf("score %d = %g, want the row's norm %g", i, got, want)
		}
	}
	if a.Scores[maskedTarget.Pos] != 0 {
		t.Errorf("the <mask> row (zeroed by token dropout) has saliency %g, want 0", a.Scores[maskedTarget.Pos])
	}
}

// Integrated gradients add up to logit(input) - logit(baseline), and
// packing the path in several passes changes nothing.
func TestIntegratedGradients(t *testing.T) {
	m := loadTiny(t)
	ctx := context.Background()
	const steps = 24
	a, err := m.IntegratedGradients(ctx, maskedTarget, IGOptions{Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, s := range a.Scores {
		sum += float64(s)
	}
	delta := float64(a.Value - a.Baseline)
	// Completeness holds up to the midpoint rule's error: measured 0.37%
	// of delta at 24 steps (11% at 8, 0.6% at 12, 0.05% at 48); 2% fails
	// if a point or a scale is lost (errors of 1/steps = 4% or more) or
	// the (input - baseline) factor is wrong.
	if math.Abs(sum-delta) > 0.02*math.Abs(delta) {
		t.Errorf("sum of attributions %.6g, logit(input) - logit(baseline) = %.6g", sum, delta)
	}
	t.Logf("completeness: sum %.6g, delta %.6g (%.2g relative)", sum, delta, math.Abs(sum-delta)/math.Abs(delta))

	// three passes of 10, 10 and 4 points instead of one
	T := len(a.Tokens)
	b, err := m.integratedGradients(ctx, maskedTarget, IGOptions{Steps: steps}, 10*T)
	if err != nil {
		t.Fatal(err)
	}
	// the same fp32 gradients, summed in another grouping: ~1e-7; 1e-5
	if e := relErr(b.Grad, a.Grad); e > 1e-5 {
		t.Errorf("chunked attributions differ: %.3g", e)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.IntegratedGradients(cancelled, maskedTarget, IGOptions{Steps: steps}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err %v, want context.Canceled", err)
	}
}

// Bad targets and requests are errors, not panics.
func TestBadInput(t *testing.T) {
	m := loadTiny(t)
	for _, tg := range []Target{
		{Seq: "", Pos: 0, Token: 5},
		{Seq: "MK1", Pos: 1, Token: 5},
		{Seq: "MK", Pos: 4, Token: 5},
		{Seq: "MK", Pos: -1, Token: 5},
		{Seq: "MK", Pos: 1, Token: 33},
		{Seq: "MK", Pos: 1, Token: -2},
	} {
		if _, err := m.Saliency(tg); err == nil {
			t.Errorf("Saliency(%+v): no error", tg)
		}
		if _, err := m.IntegratedGradients(context.Background(), tg, IGOptions{Steps: 4}); err == nil {
			t.Errorf("IntegratedGradients(%+v): no error", tg)
		}
	}
	if _, err := m.IntegratedGradients(context.Background(), maskedTarget, IGOptions{Steps: -1}); err == nil {
		t.Error("IntegratedGradients with -1 steps: no error")
	}
	if _, err := m.IntegratedGradients(context.Background(), maskedTarget, IGOptions{Baseline: make([]float32, 5)}); err == nil {
		t.Error("IntegratedGradients with a baseline of the wrong size: no error")
	}
	b := batchOf(t, "MKT")
	if _, err := m.Forward(b, &Options{Embeddings: make([]float32, 3)}); err == nil {
		t.Error("Forward with embeddings of the wrong size: no error")
	}
	if _, err := m.Forward(&esm.Batch{Tokens: []int32{0, 40, 2}}, nil); err == nil {
		t.Error("Forward of an invalid batch: no error")
	}
	p, err := m.Forward(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Logit(5, 4); err == nil {
		t.Error("Logit outside the pass: no error")
	}
	if _, err := p.Param("no.such.weight"); err == nil {
		t.Error("Param of an unknown name: no error")
	}
	other, err := m.Forward(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(Request{Cost: p.Hidden[1], WRT: []*G.Node{p.Embeddings}}); err == nil {
		t.Error("Run with a non-scalar cost: no error")
	}
	if _, err := other.Run(Request{Read: []*G.Node{p.Logits}}); err == nil {
		t.Error("Run with a node of another pass: no error")
	}
	p3, err := m.Forward(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p3.Run(Request{Read: []*G.Node{p3.Logits}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p3.Run(Request{Read: []*G.Node{p3.Logits}}); err == nil {
		t.Error("second Run of a pass: no error")
	}
	if _, _, err := m.Param("lm_head.decoder.weight"); err == nil {
		t.Error("Param of the tied decoder: no error (it has no tensor of its own)")
	}
}

// A pass reads the model's parameters and its input, and writes neither.
func TestRunLeavesParametersUnchanged(t *testing.T) {
	m := loadTiny(t)
	before := map[string][]float32{}
	for _, n := range m.ParamNames() {
		d, _, err := m.Param(n)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = append([]float32(nil), d...)
	}
	b := batchOf(t, testSeqs...)
	emb := make([]float32, len(b.Tokens)*m.Cfg.Dim)
	for i := range emb {
		emb[i] = float32(i%7) * 0.1
	}
	embCopy := append([]float32(nil), emb...)
	p, err := m.Forward(b, &Options{Embeddings: emb})
	if err != nil {
		t.Fatal(err)
	}
	cost, err := p.Logit(3, 7)
	if err != nil {
		t.Fatal(err)
	}
	wrt := []*G.Node{p.Embeddings}
	for _, n := range m.ParamNames() {
		w, err := p.Param(n)
		if err != nil {
			t.Fatal(err)
		}
		wrt = append(wrt, w)
	}
	if _, err := p.Run(Request{Cost: cost, WRT: wrt, Read: p.Hidden}); err != nil {
		t.Fatal(err)
	}
	for _, n := range m.ParamNames() {
		d, _, _ := m.Param(n)
		if relErr(d, before[n]) != 0 {
			t.Errorf("parameter %s changed", n)
		}
	}
	if relErr(emb, embCopy) != 0 {
		t.Error("Options.Embeddings changed")
	}
}

func maxAbs(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	return m
}

// Passes of one model may run on several goroutines at once.
func TestConcurrentPasses(t *testing.T) {
	m := loadTiny(t)
	want, err := m.Saliency(maskedTarget)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	grads := make(chan []float32, 4)
	for range 4 {
		go func() {
			a, err := m.Saliency(maskedTarget)
			if err != nil {
				errs <- err
				return
			}
			grads <- a.Grad
		}()
	}
	for range 4 {
		select {
		case err := <-errs:
			t.Error(err)
		case g := <-grads:
			if relErr(g, want.Grad) != 0 {
				t.Error("a concurrent pass computed another gradient")
			}
		}
	}
}
