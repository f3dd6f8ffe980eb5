package weights

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// pkl writes pickle protocol 2 opcodes by hand, as torch.save would.
type pkl struct{ bytes.Buffer }

func (p *pkl) op(b ...byte) { p.Write(b) }
func (p *pkl) str(s string) {
	p.op('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
}
func (p *pkl) int(n int) {
	if n != int(int32(n)) {
		p.op(0x8a, 8) // LONG1
		binary.Write(p, binary.LittleEndian, int64(n))
		return
	}
	p.op('J')
	binary.Write(p, binary.LittleEndian, int32(n))
}
func (p *pkl) global(module, name string) { p.WriteString("c" + module + "\n" + name + "\n") }
func (p *pkl) tuple(ns []int) {
	p.op('(')
	for _, n := range ns {
		p.int(n)
	}
	p.op('t')
}

// ptTensorSpec is one tensor of a test .pt: values in storage key, with a view.
type ptTensorSpec struct {
	name    string
	class   string // FloatStorage, HalfStorage, ...
	key     string
	numel   int
	offset  int
	shape   []int
	stride  []int // nil = contiguous
	storage []byte
}

func contiguousStride(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// buildFairESMPt writes a zip-format torch.save file {"model": OrderedDict(state
// dict), "cfg": {"model": <cfgObj>}} where cfgObj is written by writeCfg.
func buildFairESMPt(t testing.TB, path string, specs []ptTensorSpec, writeCfg func(p *pkl)) {
	t.Helper()
	var zb bytes.Buffer
	buildFairESMPtTo(t, &zb, specs, writeCfg)
	writeFile(t, path, zb.Bytes())
}

// buildFairESMPtTo writes what buildFairESMPt writes to w.
func buildFairESMPtTo(t testing.TB, w io.Writer, specs []ptTensorSpec, writeCfg func(p *pkl)) {
	t.Helper()
	var p pkl
	p.op(0x80, 2)
	p.op('}', '(')
	p.str("model")
	p.global("collections", "OrderedDict")
	p.op(')', 'R', '(')
	for _, s := range specs {
		p.str(s.name)
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.op('(')
		// persistent id ('storage', torch.XStorage, key, 'cpu', numel)
		p.op('(')
		p.str("storage")
		p.global("torch", s.class)
		p.str(s.key)
		p.str("cpu")
		p.int(s.numel)
		p.op('t', 'Q')
		p.int(s.offset)
		p.tuple(s.shape)
		stride := s.stride
		if stride == nil {
			stride = contiguousStride(s.shape)
		}
		p.tuple(stride)
		p.op(0x89) // False
		p.global("collections", "OrderedDict")
		p.op(')', 'R')
		p.op('t', 'R')
	}
	p.op('u')
	if writeCfg != nil {
		p.str("cfg")
		p.op('}', '(')
		p.str("model")
		writeCfg(&p)
		p.op('u')
	}
	p.op('u', '.')

	zw := zip.NewWriter(w)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	add("archive/data.pkl", p.Bytes())
	seen := map[string]bool{}
	for _, s := range specs {
		if !seen[s.key] {
			seen[s.key] = true
			add("archive/data/"+s.key, s.storage)
		}
	}
	add("archive/version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// namespaceCfg writes argparse.Namespace(encoder_layers=L, ...) as pickle does.
func namespaceCfg(layers, dim, heads int, tokenDropout bool) func(p *pkl) {
	return func(p *pkl) {
		p.global("argparse", "Namespace")
		p.op(')', 0x81, '}', '(')
		p.str("encoder_layers")
		p.int(layers)
		p.str("encoder_embed_dim")
		p.int(dim)
		if heads > 0 {
			p.str("encoder_attention_heads")
			p.int(heads)
		}
		p.str("token_dropout")
		if tokenDropout {
			p.op(0x88)
		} else {
			p.op(0x89)
		}
		p.str("arch")
		p.str("roberta_large")
		p.op('u', 'b')
	}
}

// tinyFairSpecs returns the tiny model as a fair-esm state dict: fp16 storages,
// lm_head.weight sharing the embed_tokens storage (tied) and one transposed view.
func tinyFairSpecs() []ptTensorSpec {
	shapes := map[string][]int{
		"encoder.sentence_encoder.embed_tokens.weight":         {tinyV, tinyD},
		"encoder.sentence_encoder.emb_layer_norm_after.weight": {tinyD},
		"encoder.sentence_encoder.emb_layer_norm_after.bias":   {tinyD},
		"encoder.lm_head.dense.weight":                         {tinyD, tinyD},
		"encoder.lm_head.dense.bias":                           {tinyD},
		"encoder.lm_head.layer_norm.weight":                    {tinyD},
		"encoder.lm_head.layer_norm.bias":                      {tinyD},
		"encoder.lm_head.bias":                                 {tinyV},
		"encoder.sentence_encoder.version":                     {1},
	}
	for i := 0; i < tinyL; i++ {
		p := fmt.Sprintf("encoder.sentence_encoder.layers.%d.", i)
		for _, m := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			shapes[p+"self_attn."+m+".weight"] = []int{tinyD, tinyD}
			shapes[p+"self_attn."+m+".bias"] = []int{tinyD}
		}
		shapes[p+"self_attn.rot_emb.inv_freq"] = []int{tinyD / tinyH / 2}
		for _, ln := range []string{"self_attn_layer_norm", "final_layer_norm"} {
			shapes[p+ln+".weight"] = []int{tinyD}
			shapes[p+ln+".bias"] = []int{tinyD}
		}
		shapes[p+"fc1.weight"] = []int{tinyF, tinyD}
		shapes[p+"fc1.bias"] = []int{tinyF}
		shapes[p+"fc2.weight"] = []int{tinyD, tinyF}
		shapes[p+"fc2.bias"] = []int{tinyD}
	}
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	var specs []ptTensorSpec
	for i, n := range names {
		numel := 1
		for _, d := range shapes[n] {
			numel *= d
		}
		v := make([]uint16, numel)
		for j := range v {
			v[j] = uint16(0x3c00 + i) // distinct fp16 value per tensor
		}
		specs = append(specs, ptTensorSpec{name: n, class: "HalfStorage", key: fmt.Sprint(i), numel: numel, shape: shapes[n], storage: u16Bytes(v...)})
		if n == "encoder.sentence_encoder.embed_tokens.weight" {
			tied := specs[len(specs)-1]
			tied.name = "encoder.lm_head.weight"
			specs = append(specs, tied)
		}
	}
	return specs
}

func TestOpenFairESM(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func(p *pkl)
	}{
		{"namespace", namespaceCfg(tinyL, tinyD, tinyH, true)},
		{"dict", func(p *pkl) {
			p.op('}', '(')
			p.str("encoder_layers")
			p.int(tinyL)
			p.str("encoder_attention_heads")
			p.int(tinyH)
			p.op('u')
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "esm2_tiny.pt")
			buildFairESMPt(t, path, tinyFairSpecs(), tc.cfg)
			c, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Format != FormatFairESM {
				t.Errorf("format %q", c.Format)
			}
			want := Config{ModelType: "esm", Architectures: []string{"EsmForMaskedLM"}, NumHiddenLayers: tinyL, HiddenSize: tinyD,
				NumAttentionHeads: tinyH, IntermediateSize: tinyF, VocabSize: tinyV, MaxPositionEmbeddings: 1026, LayerNormEps: 1e-5,
				TokenDropout: true, PositionEmbeddingType: "rotary", MaskTokenID: 32, PadTokenID: 1, TorchDtype: "float16"}
			if fmt.Sprint(c.Config) != fmt.Sprint(want) {
				t.Errorf("config\n got %+v\nwant %+v", c.Config, want)
			}
			// Every canonical tensor of the HF tiny model must be there (contact head aside).
			for raw, shape := range tinyShapes() {
				name := strings.TrimPrefix(raw, "esm.")
				if strings.HasPrefix(name, "contact_head.") {
					continue
				}
				if _, err := c.Tensor(name, shape...); err != nil {
					t.Error(err)
				}
			}
			dec, err := c.Tensor("lm_head.decoder.weight", tinyV, tinyD)
			if err != nil {
				t.Fatal(err)
			}
			emb, _ := c.Tensor("embeddings.word_embeddings.weight")
			a, _ := dec.Float32()
			b, _ := emb.Float32()
			if fmt.Sprint(a) != fmt.Sprint(b) || a[0] == 0 {
				t.Error("tied lm_head.decoder.weight differs from the word embeddings")
			}
			if _, ok := c.Tensors["version"]; ok || len(c.Tensors) != len(tinyShapes())-2+1 {
				t.Errorf("%d tensors: %v", len(c.Tensors), c.Names())
			}
		})
	}
}

func TestOpenFairESMCfgFallbacks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A cfg without the attributes we read: heads from the size table fail for
	// the tiny size, so the error must say so.
	path := filepath.Join(dir, "a.pt")
	buildFairESMPt(t, path, tinyFairSpecs(), func(p *pkl) {
		p.global("argparse", "Namespace")
		p.op(')', 0x81, '}', 'b')
	})
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "not a known ESM2 size") {
		t.Errorf("unknown size: %v", err)
	}
	// No cfg at all: also inferred, same error.
	buildFairESMPt(t, path, tinyFairSpecs(), nil)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "encoder_attention_heads") {
		t.Errorf("no cfg: %v", err)
	}
	// cfg disagreeing with the tensors.
	buildFairESMPt(t, path, tinyFairSpecs(), namespaceCfg(5, tinyD, tinyH, true))
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "encoder_layers=5") {
		t.Errorf("cfg mismatch: %v", err)
	}
	// Size-table inference on the real 8M shapes, config only.
	tensors := map[string]*Tensor{
		"embeddings.word_embeddings.weight":         {Shape: []int{33, 320}, DType: F32},
		"encoder.layer.5.attention.self.query.bias": {Shape: []int{320}, DType: F32},
	}
	cfg, err := fairESMConfig("x.pt", nil, tensors)
	if err != nil || cfg.NumHiddenLayers != 6 || cfg.NumAttentionHeads != 20 || cfg.IntermediateSize != 1280 || !cfg.TokenDropout {
		t.Errorf("8M inference: %+v %v", cfg, err)
	}
}

func TestFairESMStridedAndBounds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "s.pt")
	specs := tinyFairSpecs()
	// A transposed view: storage holds [[1,2,3],[4,5,6]] (2x3); the tensor is its
	// transpose (3x2, stride (1,3)).
	specs = append(specs, ptTensorSpec{name: "encoder.contact_head.regression.weight", class: "FloatStorage", key: "t",
		numel: 6, shape: []int{3, 2}, stride: []int{1, 3}, storage: f32Bytes(1, 2, 3, 4, 5, 6)})
	specs = append(specs, ptTensorSpec{name: "encoder.contact_head.regression.bias", class: "FloatStorage", key: "t",
		numel: 6, offset: 5, shape: []int{1}, storage: f32Bytes(1, 2, 3, 4, 5, 6)})
	buildFairESMPt(t, path, specs, namespaceCfg(tinyL, tinyD, tinyH, false))
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Tensor("contact_head.regression.weight", 3, 2)
	v, _ := w.Float32()
	b, _ := c.Tensor("contact_head.regression.bias", 1)
	bv, _ := b.Float32()
	if fmt.Sprint(v) != "[1 4 2 5 3 6]" || fmt.Sprint(bv) != "[6]" || c.Config.TokenDropout {
		t.Errorf("transposed %v, offset %v, token dropout %v", v, bv, c.Config.TokenDropout)
	}
	c.Close()

	// A view beyond its storage.
	specs[len(specs)-1].offset = 6
	buildFairESMPt(t, path, specs, namespaceCfg(tinyL, tinyD, tinyH, false))
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "beyond its storage") {
		t.Errorf("out of bounds: %v", err)
	}
	// A storage whose zip entry is shorter than numel says.
	specs = tinyFairSpecs()
	specs[0].storage = specs[0].storage[:4]
	buildFairESMPt(t, path, specs, nil)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("short storage: %v", err)
	}
	// Unsupported storage dtype.
	specs = tinyFairSpecs()
	specs[0].class = "DoubleStorage"
	buildFairESMPt(t, path, specs, nil)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "DoubleStorage") {
		t.Errorf("double storage: %v", err)
	}
}

func TestOpenFairESMContactRegression(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "esm2_tiny.pt")
	buildFairESMPt(t, path, tinyFairSpecs(), namespaceCfg(tinyL, tinyD, tinyH, true))
	buildFairESMPt(t, filepath.Join(dir, "esm2_tiny-contact-regression.pt"), []ptTensorSpec{
		{name: "contact_head.regression.weight", class: "FloatStorage", key: "0", numel: tinyL * tinyH, shape: []int{1, tinyL * tinyH}, storage: f32Bytes(1, 2, 3, 4)},
		{name: "contact_head.regression.bias", class: "FloatStorage", key: "1", numel: 1, shape: []int{1}, storage: f32Bytes(-1)},
	}, nil)
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Tensor("contact_head.regression.weight", 1, tinyL*tinyH); err != nil {
		t.Error(err)
	}
}

func TestOpenTorchBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := map[string][]byte{
		"legacy.pt":  {0x80, 0x02, 0x8a, 0x0a},
		"garbage.pt": []byte("hello world"),
		"empty.pt":   nil,
	}
	for name, data := range cases {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A zip without data.pkl, and one with a malformed pickle.
	for name, files := range map[string]map[string][]byte{
		"nopkl.pt": {"archive/version": []byte("3")},
		"bad.pt":   {"archive/data.pkl": {0x80, 2, '}', '(', 'X', 1, 0, 0, 0, 'a', 'u', '.'}},
		"trunc.pt": {"archive/data.pkl": {0x80, 2, '}', '('}},
		"ts.pt":    {"archive/data.pkl": {'.'}, "archive/constants.pkl": {'.'}},
	} {
		var zb bytes.Buffer
		zw := zip.NewWriter(&zb)
		for n, d := range files {
			w, _ := zw.Create(n)
			w.Write(d)
		}
		zw.Close()
		p := filepath.Join(dir, name)
		os.WriteFile(p, zb.Bytes(), 0o644)
		if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFairESMCanonicalNames(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"encoder.sentence_encoder.embed_tokens.weight":                  "embeddings.word_embeddings.weight",
		"encoder.sentence_encoder.layers.12.self_attn.q_proj.weight":    "encoder.layer.12.attention.self.query.weight",
		"encoder.sentence_encoder.layers.0.self_attn.k_proj.bias":       "encoder.layer.0.attention.self.key.bias",
		"encoder.sentence_encoder.layers.0.self_attn.v_proj.weight":     "encoder.layer.0.attention.self.value.weight",
		"encoder.sentence_encoder.layers.0.self_attn.out_proj.bias":     "encoder.layer.0.attention.output.dense.bias",
		"encoder.sentence_encoder.layers.0.self_attn.rot_emb.inv_freq":  "encoder.layer.0.attention.self.rotary_embeddings.inv_freq",
		"encoder.sentence_encoder.layers.3.self_attn_layer_norm.weight": "encoder.layer.3.attention.LayerNorm.weight",
		"encoder.sentence_encoder.layers.3.fc1.weight":                  "encoder.layer.3.intermediate.dense.weight",
		"encoder.sentence_encoder.layers.3.fc2.bias":                    "encoder.layer.3.output.dense.bias",
		"encoder.sentence_encoder.layers.3.final_layer_norm.bias":       "encoder.layer.3.LayerNorm.bias",
		"encoder.sentence_encoder.emb_layer_norm_after.weight":          "encoder.emb_layer_norm_after.weight",
		"encoder.lm_head.weight":                                        "lm_head.decoder.weight",
		"encoder.lm_head.bias":                                          "lm_head.bias",
		"encoder.lm_head.dense.weight":                                  "lm_head.dense.weight",
		"encoder.lm_head.layer_norm.bias":                               "lm_head.layer_norm.bias",
		"contact_head.regression.weight":                                "contact_head.regression.weight",
		"encoder.sentence_encoder.version":                              "",
	} {
		got, ok := fairESMCanonicalName(raw)
		if got != want || ok != (want != "") {
			t.Errorf("%s -> %q %v, want %q", raw, got, ok, want)
		}
	}
}
