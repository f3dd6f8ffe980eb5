package graph

import (
	"errors"
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Request says what one Pass.Run computes.
type Request struct {
	// Cost is the scalar to differentiate (a node of the pass's graph, e.g.
	// from Pass.Logit or Pass.Project); nil runs the forward pass only.
	Cost *G.Node
	// WRT are the nodes to differentiate Cost with respect to: the pass's
	// Embeddings, parameters (Pass.Param) or the caller's own leaves.
	WRT []*G.Node
	// Read are nodes whose values to return.
	Read []*G.Node
}

// Result holds what a Run computed, as row-major float32 copies (each of
// the shape of its node).
type Result struct {
	Cost   float32     // the value of Request.Cost
	Grads  [][]float32 // dCost/dWRT[i]
	Values [][]float32 // the values of Request.Read[i]
}

// Run computes what req asks, once: only the nodes the requested values
// need are executed (the gradients of parameters nobody asked for are not
// computed). A Pass runs once, because gorgonia.Grad adds the backward
// nodes to its graph; build another pass with Model.Forward for the next
// run (for the tiny and 8M models that takes well under a millisecond).
func (p *Pass) Run(req Request) (res *Result, err error) {
	if p.ran {
		return nil, errors.New("graph: this pass has run already; build another with Model.Forward")
	}
	p.ran = true
	// Gorgonia panics on some internal inconsistencies instead of
	// returning errors; none must escape to the caller.
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("graph: run: gorgonia: %v", r)
		}
	}()
	if req.Cost != nil && req.Cost.Graph() != p.Graph {
		return nil, errors.New("graph: run: the cost is a node of another graph")
	}
	for _, list := range []struct {
		what  string
		nodes []*G.Node
	}{{"WRT", req.WRT}, {"Read", req.Read}} {
		for i, n := range list.nodes {
			if n == nil || n.Graph() != p.Graph {
				return nil, fmt.Errorf("graph: run: %s[%d] is nil or a node of another graph", list.what, i)
			}
		}
	}
	var want G.Nodes // cost, then gradients, then reads
	if req.Cost != nil {
		if req.Cost.Shape().TotalSize() != 1 {
			return nil, fmt.Errorf("graph: run: the cost has shape %v, want a scalar", req.Cost.Shape())
		}
		if len(req.WRT) == 0 {
			return nil, errors.New("graph: run: a cost without WRT nodes")
		}
		grads, err := G.Grad(req.Cost, req.WRT...)
		if err != nil {
			return nil, fmt.Errorf("graph: gradient: %w", err)
		}
		want = append(append(want, req.Cost), grads...)
	} else if len(req.WRT) > 0 {
		return nil, errors.New("graph: run: WRT nodes without a cost")
	}
	want = append(want, req.Read...)
	if len(want) == 0 {
		return &Result{}, nil
	}
	vals := make([]G.Value, len(want))
	reads := make(G.Nodes, len(want))
	for i, n := range want {
		reads[i] = G.Read(n, &vals[i])
	}

	inputs := p.Graph.ExactSubgraphRoots(reads...).Inputs()
	prog, locs, err := G.CompileFunction(p.Graph, inputs, reads)
	if err != nil {
		return nil, fmt.Errorf("graph: compile: %w", err)
	}
	vm := G.NewTapeMachine(p.Graph, G.WithPrecompiled(prog, locs))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return nil, fmt.Errorf("graph: run: %w", err)
	}
	out := make([][]float32, len(vals))
	for i, v := range vals {
		if v == nil {
			return nil, fmt.Errorf("graph: run: no value for %v", want[i].Name())
		}
		f, err := floats(v)
		if err != nil {
			if s, ok := v.Data().(float32); ok { // a scalar
				f, err = []float32{s}, nil
			} else {
				return nil, fmt.Errorf("graph: run: %v: %w", want[i].Name(), err)
			}
		}
		out[i] = append([]float32(nil), f...)
	}
	res = &Result{}
	if req.Cost != nil {
		res.Cost, res.Grads, out = out[0][0], out[1:1+len(req.WRT)], out[1+len(req.WRT):]
	}
	res.Values = out
	return res, nil
}

// Param returns the leaf node of a parameter in this pass (see
// Model.ParamNames), for Request.WRT. It is the leaf even when
// Options.Adapt replaced its use.
func (p *Pass) Param(name string) (*G.Node, error) {
	n, ok := p.params[name]
	if !ok {
		return nil, fmt.Errorf("graph: the pass uses no parameter %q (see Model.ParamNames)", cut(name))
	}
	return n, nil
}

// Project returns the scalar sum(n ⊙ w) for a node n of the pass and
// weights w of n's size (row-major): a projection of an embedding, or a
// single logit with a one-hot w.
func (p *Pass) Project(n *G.Node, w []float32) (*G.Node, error) {
	if n == nil || n.Graph() != p.Graph {
		return nil, errors.New("graph: project: the node is nil or from another graph")
	}
	if len(w) != n.Shape().TotalSize() {
		return nil, fmt.Errorf("graph: project: %d weights for a node of shape %v", len(w), n.Shape())
	}
	c := G.NewTensor(p.Graph, tensor.Float32, n.Dims(), G.WithShape(n.Shape()...), G.WithName(fmt.Sprintf("projection of %s", n.Name())),
		G.WithValue(dense(append([]float32(nil), w...), n.Shape()...)))
	prod, err := G.HadamardProd(n, c)
	if err != nil {
		return nil, fmt.Errorf("graph: project: %w", err)
	}
	s, err := G.Sum(prod)
	if err != nil {
		return nil, fmt.Errorf("graph: project: %w", err)
	}
	return s, nil
}

// Logit returns the masked-LM logit of vocabulary entry tok at row t of
// the pass (t counts tokens of the whole packed batch, BOS included).
func (p *Pass) Logit(t int, tok int32) (*G.Node, error) {
	V := p.Cfg.Vocab
	switch {
	case p.Logits == nil:
		return nil, errors.New("graph: the model has no LM head")
	case t < 0 || t >= len(p.Tokens):
		return nil, fmt.Errorf("graph: logit row %d outside the pass's %d tokens", t, len(p.Tokens))
	case tok < 0 || int(tok) >= V:
		return nil, fmt.Errorf("graph: logit of token id %d outside the %d-token alphabet", tok, V)
	}
	w := make([]float32, len(p.Tokens)*V)
	w[t*V+int(tok)] = 1
	return p.Project(p.Logits, w)
}
