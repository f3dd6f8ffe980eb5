package esm_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/internal/memcap"
	"github.com/esm2go/esm2go/weights"
)

// paramShape is the shape of a canonical parameter name in a model of cfg.
func paramShape(cfg esm.Config, name string) []int {
	D, F, V := cfg.Dim, cfg.FFN, cfg.Vocab
	switch {
	case name == "embeddings.word_embeddings.weight":
		return []int{V, D}
	case name == "lm_head.bias":
		return []int{V}
	case strings.HasSuffix(name, "intermediate.dense.weight"):
		return []int{F, D}
	case strings.HasSuffix(name, "intermediate.dense.bias"):
		return []int{F}
	case strings.HasSuffix(name, ".output.dense.weight") && !strings.Contains(name, "attention"):
		return []int{D, F}
	case strings.HasSuffix(name, "dense.weight"), strings.HasSuffix(name, "query.weight"),
		strings.HasSuffix(name, "key.weight"), strings.HasSuffix(name, "value.weight"):
		return []int{D, D}
	}
	return []int{D}
}

// writeModel writes src as an HF checkpoint directory (config.json and an
// F32 model.safetensors) whose config.json is cfgJSON.
func writeModel(t *testing.T, dir string, cfg esm.Config, src esmtest.Source, cfgJSON map[string]any) {
	t.Helper()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range src {
			if !yield(n) {
				return
			}
		}
	})
	header := map[string]any{}
	var data []byte
	for _, n := range names {
		begin := len(data)
		for _, v := range src[n] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
		header["esm."+n] = map[string]any{"dtype": "F32", "shape": paramShape(cfg, n), "data_offsets": []int{begin, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	cj, err := json.Marshal(cfgJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hfConfig is cfg as an HF config.json.
func hfConfig(cfg esm.Config) map[string]any {
	return map[string]any{
		"model_type": "esm", "num_hidden_layers": cfg.Layers, "hidden_size": cfg.Dim, "num_attention_heads": cfg.Heads,
		"intermediate_size": cfg.FFN, "vocab_size": cfg.Vocab, "max_position_embeddings": 1026, "layer_norm_eps": 1e-5,
		"token_dropout": true, "position_embedding_type": "rotary", "mask_token_id": 32, "pad_token_id": 1,
	}
}

func tinyConfig(t *testing.T) esm.Config {
	t.Helper()
	cfg, err := esmtest.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A config.json with absurd sizes beside a tiny checkpoint fails LoadModel
// cleanly under a 256 MiB cap: no buffer is sized from it first.
func TestLoadModelAbsurdConfig(t *testing.T) {
	memcap.Run(t, 256<<20, func(t *testing.T) {
		cfg := tinyConfig(t)
		src := esmtest.Random(cfg, 1)
		for key, v := range map[string]int{"hidden_size": 1 << 30, "num_hidden_layers": 10_000_000, "intermediate_size": 1 << 40, "vocab_size": 1 << 40} {
			dir := t.TempDir()
			cj := hfConfig(cfg)
			cj[key] = v
			if key == "hidden_size" {
				cj["num_attention_heads"] = 1 << 24
			}
			writeModel(t, dir, cfg, src, cj)
			m, err := esm.LoadModel(dir, cpu.New(cpu.Options{}))
			if err == nil {
				m.Close()
				t.Errorf("%s=%d: no error", key, v)
			} else if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "config.json") {
				t.Errorf("%s=%d: error %v should name the field and the file", key, v, err)
			}
		}
		// Within the limits but not the tensors' sizes.
		dir := t.TempDir()
		cj := hfConfig(cfg)
		cj["hidden_size"], cj["intermediate_size"] = 4096, 16384
		writeModel(t, dir, cfg, src, cj)
		if _, err := esm.LoadModel(dir, cpu.New(cpu.Options{})); err == nil || !strings.Contains(err.Error(), "hidden_size=4096") {
			t.Errorf("hidden size 4096 against 64-wide tensors: %v", err)
		}
	})
}

// LoadParams sizes nothing from a config its source does not back: neither
// the per-layer tables (a config of ten million layers) nor a stacked QKV
// buffer (a width of 2^20), on the parallel path whose readers run ahead.
func TestLoadParamsSizedFromSource(t *testing.T) {
	memcap.Run(t, 256<<20, func(t *testing.T) {
		cfg := tinyConfig(t)
		src := esmtest.Random(cfg, 2)
		ps := &parallelSource{Source: src, r: rand.New(rand.NewPCG(1, 2))}
		big := cfg
		big.Layers = 10_000_000
		_, err := esm.LoadParams(big, ps, cpu.New(cpu.Options{}))
		if !errors.Is(err, esm.ErrMissing) || !strings.Contains(err.Error(), "encoder.layer.9999999.") {
			t.Errorf("10M layers: %v", err)
		}
		wide := cfg
		wide.Dim, wide.Heads, wide.FFN = 1<<20, 1<<14, 1<<22
		r := &recorder{Backend: cpu.New(cpu.Options{})}
		if _, err := esm.LoadParams(wide, ps, r); err == nil || !strings.Contains(err.Error(), "embeddings.word_embeddings.weight") {
			t.Errorf("width 2^20: %v", err)
		}
		if r.live != 0 {
			t.Errorf("%d uploads left live", r.live)
		}
	})
}

// One NaN or Inf in any weight fails the load (it would make every
// embedding NaN, or finite and wrong), naming the file, the tensor and the
// element.
func TestLoadModelNonFinite(t *testing.T) {
	cfg := tinyConfig(t)
	for _, c := range []struct {
		name string
		at   int
		v    float32
		want string
	}{
		{"encoder.layer.1.attention.self.query.weight", 130, float32(math.NaN()), "element 130 [2 2] is NaN"},
		{"embeddings.word_embeddings.weight", 64*32 + 1, float32(math.Inf(-1)), "element 2049 [32 1] is -Inf"},
		{"encoder.emb_layer_norm_after.bias", 63, float32(math.Inf(1)), "element 63 [63] is +Inf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := esmtest.Random(cfg, 4)
			src[c.name][c.at] = c.v
			dir := t.TempDir()
			writeModel(t, dir, cfg, src, hfConfig(cfg))
			m, err := esm.LoadModel(dir, cpu.New(cpu.Options{}))
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			var nf *weights.NonFiniteError
			if !errors.As(err, &nf) || nf.Index != c.at {
				t.Errorf("error %v, want a weights.NonFiniteError at %d", err, c.at)
			}
			for _, w := range []string{filepath.Join(dir, "model.safetensors"), `"` + c.name + `"`, c.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q should contain %q", err, w)
				}
			}
		})
	}
	// The same model without the bad value loads.
	dir := t.TempDir()
	writeModel(t, dir, cfg, esmtest.Random(cfg, 4), hfConfig(cfg))
	m, err := esm.LoadModel(dir, cpu.New(cpu.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

// weights.Config.Validate alone decides whether a config is ESM2; it agrees
// with the alphabet the forward pass uses.
func TestConfigFromHF(t *testing.T) {
	ok := weights.Config{ModelType: "esm", NumHiddenLayers: 2, HiddenSize: 64, NumAttentionHeads: 4, IntermediateSize: 256,
		VocabSize: esm.VocabSize, LayerNormEps: 1e-5, PositionEmbeddingType: "rotary", MaskTokenID: int(esm.TokMask), PadTokenID: 1, TokenDropout: true}
	c, err := esm.ConfigFromHF(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Layers != 2 || c.Dim != 64 || c.Heads != 4 || c.FFN != 256 || c.Vocab != esm.VocabSize || c.MaskToken != esm.TokMask || !c.TokenDropout || c.LayerNormEps != 1e-5 {
		t.Errorf("config %+v", c)
	}
	for _, bad := range []func(*weights.Config){
		func(w *weights.Config) { w.ModelType = "bert" },
		func(w *weights.Config) { w.ModelType = "" },
		func(w *weights.Config) { w.PositionEmbeddingType = "absolute" },
		func(w *weights.Config) { w.EmbLayerNormBefore = true },
		func(w *weights.Config) { w.IsFoldingModel = true },
		func(w *weights.Config) { w.MaskTokenID = int(esm.TokMask) - 1 },
		func(w *weights.Config) { w.VocabSize = esm.VocabSize + 1 },
		func(w *weights.Config) { w.HiddenSize = 1 << 30 },
		func(w *weights.Config) { w.LayerNormEps = 0 },
	} {
		w := ok
		bad(&w)
		wantErr := w.Validate()
		if _, err := esm.ConfigFromHF(w); err == nil || wantErr == nil || !strings.Contains(err.Error(), wantErr.Error()) {
			t.Errorf("%+v: ConfigFromHF error %v, weights.Validate %v", w, err, wantErr)
		}
	}
}

// TestRotaryCopiesMustAgree: the model applies layer 0's rotary table in
// every layer, so a checkpoint whose later layers hold another table (HF
// would use each layer's own) or a NaN in one is refused, naming the layer;
// identical copies load.
func TestRotaryCopiesMustAgree(t *testing.T) {
	t.Parallel()
	cfg := tinyConfig(t)
	be := cpu.New(cpu.Options{})
	defer be.Close()
	layer := func(l int) string {
		return fmt.Sprintf("encoder.layer.%d.attention.self.rotary_embeddings.inv_freq", l)
	}
	inv := esm.DefaultInvFreq(cfg.HeadDim())
	for _, tc := range []struct {
		name string
		edit func(src esmtest.Source)
		want string // "" for success
	}{
		{"identical copies", func(esmtest.Source) {}, ""},
		{"layer 2 scaled", func(src esmtest.Source) {
			g := slices.Clone(inv)
			g[0] *= 50
			src[layer(2)] = g
		}, "encoder.layer.2.attention.self.rotary_embeddings.inv_freq differs from layer 0's at element 0"},
		{"NaN in layer 1", func(src esmtest.Source) {
			g := slices.Clone(inv)
			g[1] = float32(math.NaN())
			src[layer(1)] = g
		}, "encoder.layer.1.attention.self.rotary_embeddings.inv_freq differs from layer 0's at element 1"},
	} {
		src := esmtest.Random(cfg, 3)
		for l := range cfg.Layers {
			src[layer(l)] = slices.Clone(inv)
		}
		tc.edit(src)
		p, err := esm.LoadParams(cfg, src, be)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
		if p != nil {
			p.Free(be)
		}
	}
}
