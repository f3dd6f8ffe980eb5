package graph

import (
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// adapter is a low-rank adapter W + B·A on one weight (D, D): B (D, r),
// A (r, D), leaves of the pass's graph.
type adapter struct {
	name   string
	r, D   int
	a, b   []float32
	na, nb *G.Node
}

func (ad *adapter) adapt(name string, w *G.Node) (*G.Node, error) {
	if name != ad.name {
		return w, nil
	}
	g := w.Graph()
	ad.na = G.NewMatrix(g, tensor.Float32, G.WithShape(ad.r, ad.D), G.WithName("lora A"), G.WithValue(dense(append([]float32(nil), ad.a...), ad.r, ad.D)))
	ad.nb = G.NewMatrix(g, tensor.Float32, G.WithShape(ad.D, ad.r), G.WithName("lora B"), G.WithValue(dense(append([]float32(nil), ad.b...), ad.D, ad.r)))
	ba, err := G.Mul(ad.nb, ad.na)
	if err != nil {
		return nil, err
	}
	return G.Add(w, ba)
}

// mlmLoss is the masked-LM cross entropy of the pass at the rows whose
// true token is given (row -> token id).
func mlmLoss(t *testing.T, p *Pass, truth map[int]int32) *G.Node {
	t.Helper()
	ls, err := G.LogSoftMax(p.Logits)
	if err != nil {
		t.Fatal(err)
	}
	V := p.Cfg.Vocab
	w := make([]float32, len(p.Tokens)*V)
	for row, tok := range truth {
		w[row*V+int(tok)] = -1 / float32(len(truth))
	}
	loss, err := p.Project(ls, w)
	if err != nil {
		t.Fatal(err)
	}
	return loss
}

// A low-rank adapter through Options.Adapt: its gradients obey the chain
// rule against the adapted weight's own gradient, and a few gradient
// steps on it lower the masked-LM loss.
func TestLowRankAdapter(t *testing.T) {
	m := loadTiny(t)
	D := m.Cfg.Dim
	const rank = 2
	name := "encoder.layer.1.attention.self.query.weight"
	r := rand.New(rand.NewPCG(3, 3))
	ad := &adapter{name: name, r: rank, D: D, a: randn(r, rank*D, 0.1), b: randn(r, D*rank, 0.1)}
	b := batchOf(t, testSeqs[1], testSeqs[0])
	truth := map[int]int32{2: 15, 11: 16} // the masked residues of testSeqs[1]: K, Q

	run := func() (float32, [][]float32) {
		p, err := m.Forward(b, &Options{Adapt: ad.adapt})
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.Run(Request{Cost: mlmLoss(t, p, truth), WRT: []*G.Node{ad.na, ad.nb}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Cost, res.Grads
	}
	loss0, grads := run()

	// the chain rule: with W' = W + B·A baked into the model,
	// dL/dA = Bᵀ·dL/dW' and dL/dB = dL/dW'·Aᵀ
	w, _, err := m.Param(name)
	if err != nil {
		t.Fatal(err)
	}
	orig := append([]float32(nil), w...)
	for i := range D {
		for j := range D {
			for k := range rank {
				w[i*D+j] += ad.b[i*rank+k] * ad.a[k*D+j]
			}
		}
	}
	p, err := m.Forward(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	wn, err := p.Param(name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Run(Request{Cost: mlmLoss(t, p, truth), WRT: []*G.Node{wn}})
	copy(w, orig)
	if err != nil {
		t.Fatal(err)
	}
	gw := res.Grads[0]
	wantA, wantB := make([]float32, rank*D), make([]float32, D*rank)
	for k := range rank {
		for j := range D {
			for i := range D {
				wantA[k*D+j] += ad.b[i*rank+k] * gw[i*D+j]
				wantB[i*rank+k] += gw[i*D+j] * ad.a[k*D+j]
			}
		}
	}
	// The same fp32 numbers through two association orders: ~1e-6;
	// 1e-4 is margin (a transposed factor gives an O(1) error).
	if e := relErr(grads[0], wantA); e > 1e-4 {
		t.Errorf("dL/dA differs from Bᵀ·dL/dW by %.3g", e)
	}
	if e := relErr(grads[1], wantB); e > 1e-4 {
		t.Errorf("dL/dB differs from dL/dW·Aᵀ by %.3g", e)
	}
	if d := res.Cost - loss0; d*d > 1e-10 {
		t.Errorf("loss with the adapter %g, with the adapted weight baked in %g", loss0, res.Cost)
	}

	// gradient descent on A and B alone; the step is small enough for the
	// loss to fall at every step (0.5 overshoots on this model, whose
	// random weights give logits of size ~20)
	const lr = 0.005
	loss := loss0
	for step := range 5 {
		for i := range ad.a {
			ad.a[i] -= lr * grads[0][i]
		}
		for i := range ad.b {
			ad.b[i] -= lr * grads[1][i]
		}
		var next float32
		next, grads = run()
		if next >= loss {
			t.Errorf("step %d: loss %g did not decrease from %g", step, next, loss)
		}
		loss = next
	}
	t.Logf("masked-LM loss %.4f -> %.4f in 5 steps on a rank-%d adapter", loss0, loss, rank)
	if d, _, _ := m.Param(name); relErr(d, orig) != 0 {
		t.Error("training the adapter changed the model's weight")
	}
}
