package esm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/memcap"
)

// tinyModel has a contact head (3 layers × 4 heads = 12 channels) and
// attention far from uniform (q and k weights ×1.5; tests/README.md).
const tinyModel = "../tests/testdata/models/tiny"

// tinyWeights reads every tensor of the tiny checkpoint as float64.
func tinyWeights(t *testing.T) (esm.Config, map[string][]float64) {
	t.Helper()
	ck, cfg, err := esm.OpenCheckpoint(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	src := esm.CheckpointSource{C: ck}
	w := map[string][]float64{}
	for name := range ck.Tensors {
		d, err := src.Float32(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w[name] = make([]float64, len(d))
		for i, v := range d {
			w[name][i] = float64(v)
		}
	}
	return cfg, w
}

// refContacts is the contact prediction of one sequence in float64, from
// the ESM2 equations written out with no reuse of the esm package's code:
// embed × token-dropout scale, pre-LN layers (rotary on pre-scaled q,
// softmax attention, exact GELU), every head's attention probabilities
// kept, then the contact head (drop BOS/EOS, symmetrize, APC, regression,
// sigmoid).
func refContacts(cfg esm.Config, w map[string][]float64, tokens []int32) []float64 {
	n, D, H, F := len(tokens), cfg.Dim, cfg.Heads, cfg.FFN
	HD, half := D/H, D/H/2
	eps := float64(cfg.LayerNormEps)
	ln := func(x []float64, pre string) []float64 {
		g, b := w[pre+".weight"], w[pre+".bias"]
		y := make([]float64, len(x))
		for t := 0; t < n; t++ {
			r := x[t*D : (t+1)*D]
			var mean, v float64
			for _, e := range r {
				mean += e
			}
			mean /= float64(D)
			for _, e := range r {
				v += (e - mean) * (e - mean)
			}
			rstd := 1 / math.Sqrt(v/float64(D)+eps)
			for i, e := range r {
				y[t*D+i] = (e-mean)*rstd*g[i] + b[i]
			}
		}
		return y
	}
	lin := func(x []float64, pre string, in, out int) []float64 {
		W, b := w[pre+".weight"], w[pre+".bias"]
		y := make([]float64, n*out)
		for t := 0; t < n; t++ {
			for o := 0; o < out; o++ {
				s := b[o]
				for i := 0; i < in; i++ {
					s += x[t*in+i] * W[o*in+i]
				}
				y[t*out+o] = s
			}
		}
		return y
	}
	invFreq := w["encoder.layer.0.attention.self.rotary_embeddings.inv_freq"]
	rotate := func(x []float64) { // (n, D) in place, per head
		for t := 0; t < n; t++ {
			for h := 0; h < H; h++ {
				r := x[t*D+h*HD : t*D+(h+1)*HD]
				for i := 0; i < half; i++ {
					a := float64(t) * invFreq[i]
					c, s := math.Cos(a), math.Sin(a)
					x1, x2 := r[i], r[i+half]
					r[i], r[i+half] = x1*c-x2*s, x2*c+x1*s
				}
			}
		}
	}
	x := make([]float64, n*D)
	emb := w["embeddings.word_embeddings.weight"]
	scale := 0.88 // no <mask> tokens in these inputs
	for t, tok := range tokens {
		for i := 0; i < D; i++ {
			x[t*D+i] = emb[int(tok)*D+i] * scale
		}
	}
	var probs [][]float64 // (layers*heads) × (n, n)
	for l := 0; l < cfg.Layers; l++ {
		p := fmt.Sprintf("encoder.layer.%d.", l)
		h := ln(x, p+"attention.LayerNorm")
		q := lin(h, p+"attention.self.query", D, D)
		k := lin(h, p+"attention.self.key", D, D)
		v := lin(h, p+"attention.self.value", D, D)
		for i := range q {
			q[i] /= math.Sqrt(float64(HD))
		}
		rotate(q)
		rotate(k)
		att := make([]float64, n*D)
		for hd := 0; hd < H; hd++ {
			P := make([]float64, n*n)
			for i := 0; i < n; i++ {
				m := math.Inf(-1)
				for j := 0; j < n; j++ {
					var s float64
					for d := 0; d < HD; d++ {
						s += q[i*D+hd*HD+d] * k[j*D+hd*HD+d]
					}
					P[i*n+j] = s
					m = max(m, s)
				}
				var z float64
				for j := 0; j < n; j++ {
					P[i*n+j] = math.Exp(P[i*n+j] - m)
					z += P[i*n+j]
				}
				for j := 0; j < n; j++ {
					P[i*n+j] /= z
					for d := 0; d < HD; d++ {
						att[i*D+hd*HD+d] += P[i*n+j] * v[j*D+hd*HD+d]
					}
				}
			}
			probs = append(probs, P)
		}
		o := lin(att, p+"attention.output.dense", D, D)
		for i := range x {
			x[i] += o[i]
		}
		ff := lin(ln(x, p+"LayerNorm"), p+"intermediate.dense", D, F)
		for i, e := range ff {
			ff[i] = 0.5 * e * (1 + math.Erf(e/math.Sqrt2))
		}
		o = lin(ff, p+"output.dense", F, D)
		for i := range x {
			x[i] += o[i]
		}
	}
	L := n - 2
	logit := make([]float64, L*L)
	weight, bias := w["contact_head.regression.weight"], w["contact_head.regression.bias"][0]
	for c, P := range probs {
		s := make([]float64, L*L)
		for i := 0; i < L; i++ {
			for j := 0; j < L; j++ {
				s[i*L+j] = P[(i+1)*n+j+1] + P[(j+1)*n+i+1]
			}
		}
		a1, a2 := make([]float64, L), make([]float64, L)
		var a12 float64
		for i := 0; i < L; i++ {
			for j := 0; j < L; j++ {
				a1[i] += s[i*L+j]
				a2[j] += s[i*L+j]
				a12 += s[i*L+j]
			}
		}
		for i := 0; i < L; i++ {
			for j := 0; j < L; j++ {
				logit[i*L+j] += weight[c] * (s[i*L+j] - a1[i]*a2[j]/a12)
			}
		}
	}
	for i := range logit {
		logit[i] = 1 / (1 + math.Exp(-(logit[i] + bias)))
	}
	return logit
}

func loadCPU(t *testing.T, path string, opts cpu.Options) *esm.Model {
	t.Helper()
	be := cpu.New(opts)
	m, err := esm.LoadModel(path, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		be.Close()
	})
	return m
}

func encode(t *testing.T, seqs ...[]byte) *esm.Batch {
	t.Helper()
	tok := esm.NewTokenizer(1022)
	var b esm.Batch
	b.Reset()
	for _, s := range seqs {
		ids, e, err := tok.Encode(nil, s)
		if err != nil {
			t.Fatal(err)
		}
		b.Append(ids, e.Masks)
	}
	return &b
}

// contactTol bounds max|Go fp32 − float64 reference| over a contact map.
// How chosen: the fp32 forward differs from float64 by about 1e-6 of each
// activation (tests/README.md: HF fp32 vs float64 on this model ≤ 9e-7);
// a probability error of δ moves an APC'd channel by a few δ, the 12
// regression weights are O(1) and the sigmoid's slope is ≤ 1/4, so a
// contact moves by ~1e-7..1e-6. Measured: at most 1.3e-7 (the sequences
// below, L up to 130). 2e-6 leaves a 15x margin, while changing one
// channel's weight by 1% moves contacts by 2e-4
// (TestContactsReferenceIsSensitive).
const contactTol = 2e-6

func TestContactsMatchFloat64Reference(t *testing.T) {
	t.Parallel()
	cfg, w := tinyWeights(t)
	m := loadCPU(t, tinyModel, cpu.Options{})
	if !m.HasContactHead() {
		t.Fatal("the tiny model has no contact head")
	}
	r := rand.New(rand.NewPCG(5, 6))
	// Lengths around the 64-wide tiles of the accumulation and the CPU
	// attention's 64-row blocks; a 1-residue map; packed and alone.
	seqs := [][]byte{[]byte("M"), esmtest.Sequence(r, 5), esmtest.Sequence(r, 63), esmtest.Sequence(r, 130)}
	check := func(what string, got [][]float32, b *esm.Batch) {
		t.Helper()
		if len(got) != b.NumSeqs() {
			t.Fatalf("%s: %d maps for %d sequences", what, len(got), b.NumSeqs())
		}
		for s := range got {
			toks := b.Tokens[b.Seqlens.Start(s) : b.Seqlens.Start(s)+b.Seqlens.Len(s)]
			want := refContacts(cfg, w, toks)
			L := len(toks) - 2
			if len(got[s]) != L*L {
				t.Fatalf("%s seq %d: %d values, want %d×%d", what, s, len(got[s]), L, L)
			}
			var worst float64
			for i, v := range got[s] {
				if d := math.Abs(float64(v) - want[i]); !(d <= worst) {
					worst = d
				}
				if v != got[s][(i%L)*L+i/L] {
					t.Fatalf("%s seq %d: not symmetric at %d", what, s, i)
				}
			}
			if worst > contactTol {
				t.Errorf("%s seq %d (L=%d): max|got-want| = %.3g > %g", what, s, L, worst, contactTol)
			} else {
				t.Logf("%s seq %d (L=%d): max|got-want| = %.3g", what, s, L, worst)
			}
		}
	}
	packed := encode(t, seqs...)
	got, err := m.Contacts(context.Background(), packed)
	if err != nil {
		t.Fatal(err)
	}
	check("packed", got, packed)
	for i, s := range seqs[2:] {
		b := encode(t, s)
		got, err := m.Contacts(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("alone %d", i), got, b)
	}
}

// A wrong step must move the result well beyond contactTol, or the test
// above could not catch it: dropping the APC changes the tiny model's
// contacts by far more than the bound.
func TestContactsReferenceIsSensitive(t *testing.T) {
	t.Parallel()
	cfg, w := tinyWeights(t)
	toks := encode(t, esmtest.Sequence(rand.New(rand.NewPCG(1, 2)), 40)).Tokens
	base := refContacts(cfg, w, toks)
	w2 := map[string][]float64{}
	for k, v := range w {
		w2[k] = v
	}
	// The same model with the last channel's weight moved by 1%.
	cw := append([]float64(nil), w["contact_head.regression.weight"]...)
	cw[len(cw)-1] *= 1.01
	w2["contact_head.regression.weight"] = cw
	moved := refContacts(cfg, w2, toks)
	var d float64
	for i := range base {
		d = max(d, math.Abs(base[i]-moved[i]))
	}
	if d < 50*contactTol {
		t.Errorf("a 1%% change of one regression weight moves contacts by %.3g only (bound %g)", d, contactTol)
	}
	t.Logf("1%% of one channel's weight: max change %.3g", d)
}

func TestContactsNoHead(t *testing.T) {
	t.Parallel()
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(cpu.Options{})
	defer be.Close()
	src := esmtest.Random(cfg, 3)
	m, err := esm.NewModel(cfg, src, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.HasContactHead() {
		t.Fatal("HasContactHead without contact_head tensors")
	}
	_, err = m.Contacts(context.Background(), encode(t, []byte("MKV")))
	if err == nil || !strings.Contains(err.Error(), "no contact head") {
		t.Fatalf("err = %v, want 'no contact head'", err)
	}

	// A head of the wrong size, or half a head, is refused at load.
	for name, bad := range map[string]esmtest.Source{
		"short weight": {esm.ContactWeightName: make([]float32, cfg.Layers*cfg.Heads-1), esm.ContactBiasName: {0}},
		"no bias":      {esm.ContactWeightName: make([]float32, cfg.Layers*cfg.Heads)},
		"no weight":    {esm.ContactBiasName: {0}},
	} {
		s := esmtest.Source{}
		for k, v := range src {
			s[k] = v
		}
		for k, v := range bad {
			s[k] = v
		}
		if _, err := esm.NewModel(cfg, s, be); err == nil || !strings.Contains(err.Error(), "contact_head.regression") {
			t.Errorf("%s: err = %v, want one naming contact_head.regression", name, err)
		}
	}
}

func TestContactsCancel(t *testing.T) {
	t.Parallel()
	m := loadCPU(t, tinyModel, cpu.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Contacts(ctx, encode(t, []byte("MKVLA")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The model still works afterwards.
	if _, err := m.Contacts(context.Background(), encode(t, []byte("MKVLA"))); err != nil {
		t.Fatal(err)
	}
}

// A 2,000-residue protein (the library does not truncate; the CLI's
// tokenizer does) under a 160 MiB address-space cap. What it needs
// (ContactBytes): the (L, L) result, 16 MB, and one head's (n, n)
// probabilities, 16 MB on the backend plus 16 MB on the host. Holding every
// channel's map, as a batched PyTorch forward with output_attentions does,
// would take 12 × 16 MB = 192 MB and fail here. The CPU backend runs
// without OpenBLAS: OpenBLAS spins instead of failing when its buffer
// allocation hits the cap. (2,000 rather than 3,000 residues keeps the
// test to about 3 CPU-seconds.)
func TestContactsLongProteinBoundedMemory(t *testing.T) {
	memcap.Run(t, 160<<20, func(t *testing.T) {
		m := loadCPU(t, tinyModel, cpu.Options{NoBLAS: true})
		const L = 2000
		if b := m.ContactBytes(L + 2); b > 50<<20 {
			t.Fatalf("ContactBytes(%d) = %d MiB", L+2, b>>20)
		}
		seq := esmtest.Sequence(rand.New(rand.NewPCG(7, 8)), L)
		ids, e, err := esm.NewTokenizer(0).Encode(nil, seq)
		if err != nil {
			t.Fatal(err)
		}
		var b esm.Batch
		b.Reset()
		b.Append(ids, e.Masks)
		maps, err := m.Contacts(context.Background(), &b)
		if err != nil {
			t.Fatal(err)
		}
		c := maps[0]
		if len(c) != L*L {
			t.Fatalf("%d values, want %d", len(c), L*L)
		}
		for _, i := range []int{0, 1, L + 1, L*L/2 + 17, L*L - 1} {
			v, tr := c[i], c[(i%L)*L+i/L]
			if !(v > 0 && v < 1) || v != tr {
				t.Fatalf("contact %d = %g (transpose %g): want a probability, symmetric", i, v, tr)
			}
		}
	})
}

// TestModelClosed: after Close, Forward, Launch and Contacts return
// ErrModelClosed (they computed on freed weights: on a GPU, freed memory);
// Close twice is fine; ContactBytes of no tokens is 0, not a division by zero.
func TestModelClosed(t *testing.T) {
	t.Parallel()
	m := loadCPU(t, tinyModel, cpu.Options{Threads: 1})
	if n := m.ContactBytes(0); n != 0 {
		t.Errorf("ContactBytes(0) = %d", n)
	}
	b := encode(t, []byte("MKT"))
	var out esm.Output
	if err := m.Forward(b, esm.Request{Logits: true}, &out); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Forward(b, esm.Request{Logits: true}, &out); !errors.Is(err, esm.ErrModelClosed) {
		t.Errorf("Forward after Close: %v", err)
	}
	if _, err := m.Contacts(context.Background(), b); !errors.Is(err, esm.ErrModelClosed) {
		t.Errorf("Contacts after Close: %v", err)
	}
}
