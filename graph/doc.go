// Package graph is ESM2 as a Gorgonia expression graph (float32, CPU) with
// gradients, for research: per-residue saliency and integrated gradients of
// a masked-LM logit or of a projection of an embedding, gradients with
// respect to the parameters, and training of small heads or low-rank
// adapters on the small models.
//
// It is not for bulk embedding: that stays on the inference backends
// (esm.Model on esm/cpu or esm/cuda). Measured on the 8M shape (random
// weights, one packed batch of 4 sequences, 708 tokens; the 2-core
// development box, shared, two runs; bench_test.go): the graph's forward
// pass ran at 222-228 tokens/s against 2085-2103 for esm/cpu with
// OpenBLAS, 9.3x slower, and at 0.85x esm/cpu restricted to gonum's pure-Go
// matmul (259-277 tokens/s): the gap is mostly the matmul kernel, since
// Gorgonia's is gonum's. Forward plus backward ran at 90-97 tokens/s with
// the input gradient only and 67-71 with every parameter's, 22-30x below
// inference on esm/cpu.
//
// # Model and passes
//
// Model holds the parameters on the host, read through esm.LoadParams (the
// backends' loader), so a graph and an esm.Model built from one checkpoint
// compute from the same numbers; names are esm.Source's (HF EsmModel names
// without "esm."). Model.Forward builds a Pass for one packed batch (tokens
// concatenated, cu_seqlens, no padding, positions restarting per sequence):
//
//	Embeddings (T, D)   the input: word-embedding rows before token dropout
//	Hidden[k] (T, D)    representation k, as esm.Model defines it
//	Logits (T, V)       the masked-LM logits
//
// A caller combines these nodes into a scalar (Pass.Logit, Pass.Project,
// or any Gorgonia operation) and runs the pass once with Pass.Run, asking
// for gradients with respect to any leaves: the embeddings, parameters
// (Pass.Param), or its own (a head's weights; a low-rank adapter's, which
// Options.Adapt puts in place of a weight). Only what the request needs is
// computed. Parameters are never written by a pass; Model.Param gives their
// storage to a training loop.
//
//	m, err := graph.Load("tests/testdata/models/tiny")
//	p, err := m.Forward(batch, nil)
//	logit, err := p.Logit(row, tokenID)
//	res, err := p.Run(graph.Request{Cost: logit, WRT: []*gorgonia.Node{p.Embeddings}})
//	// res.Grads[0] is (T, D): the saliency of every input token
//
// # Ops
//
// Matmuls, bias and residual adds, the q/k/v concatenation and the
// reductions of a cost are Gorgonia's own operations. The pieces it lacks
// are Ops of this package, each with its own backward: token dropout
// (x *= 0.88/(1 - n_mask/n) per sequence, <mask> rows zeroed), LayerNorm
// (float64 statistics as in esm/cpu, eps from the config), exact erf GELU,
// rotary (non-interleaved rotate_half, positions restarting per sequence,
// the stored inv_freq, q scaled by head_dim^-0.5 first), and varlen
// attention per sequence and head with an fp32 softmax, whose backward
// recomputes the probabilities instead of storing T^2 of them.
//
// Tests hold the forward to esm/cpu layer by layer, each op's gradient to
// central differences of a float64 reference, the whole model's gradient to
// central differences of a float64 ESM2 forward, and (build tag
// gradfixture, with the fixture from tests/gen_grad_fixtures.py) to
// PyTorch's autograd through HF EsmForMaskedLM in float64.
package graph
