package weights

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// stSpec is one tensor to write into a test safetensors file.
type stSpec struct {
	name  string
	dtype DType
	shape []int
	data  []byte
}

func f32Bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func u16Bytes(v ...uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// buildSafetensors serialises specs (in the given order) with optional metadata.
func buildSafetensors(specs []stSpec, meta map[string]string) []byte {
	header := map[string]any{}
	if meta != nil {
		header["__metadata__"] = meta
	}
	var data []byte
	for _, s := range specs {
		begin := len(data)
		data = append(data, s.data...)
		shape := s.shape
		if shape == nil {
			shape = []int{}
		}
		header[s.name] = map[string]any{"dtype": string(s.dtype), "shape": shape, "data_offsets": []int{begin, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := make([]byte, 8, 8+len(h)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	out = append(out, h...)
	return append(out, data...)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tinyDims are the sizes of the tiny test model: L layers, D dim, H heads, F ffn, V vocab.
const (
	tinyL = 2
	tinyD = 8
	tinyH = 2
	tinyF = 32
	tinyV = 33
)

func tinyConfig() map[string]any {
	return map[string]any{
		"model_type": "esm", "architectures": []string{"EsmForMaskedLM"},
		"num_hidden_layers": tinyL, "hidden_size": tinyD, "num_attention_heads": tinyH,
		"intermediate_size": tinyF, "vocab_size": tinyV, "max_position_embeddings": 1026,
		"layer_norm_eps": 1e-5, "token_dropout": true, "position_embedding_type": "rotary",
		"emb_layer_norm_before": false, "mask_token_id": 32, "pad_token_id": 1,
		"is_folding_model": false, "torch_dtype": "float32",
	}
}

func tinyConfigJSON(mod func(map[string]any)) []byte {
	c := tinyConfig()
	if mod != nil {
		mod(c)
	}
	b, _ := json.Marshal(c)
	return b
}

// tinyShapes lists the HF EsmForMaskedLM state dict (raw names) of the tiny model.
func tinyShapes() map[string][]int {
	s := map[string][]int{
		"esm.embeddings.word_embeddings.weight":   {tinyV, tinyD},
		"esm.encoder.emb_layer_norm_after.weight": {tinyD},
		"esm.encoder.emb_layer_norm_after.bias":   {tinyD},
		"esm.contact_head.regression.weight":      {1, tinyL * tinyH},
		"esm.contact_head.regression.bias":        {1},
		"lm_head.dense.weight":                    {tinyD, tinyD},
		"lm_head.dense.bias":                      {tinyD},
		"lm_head.layer_norm.weight":               {tinyD},
		"lm_head.layer_norm.bias":                 {tinyD},
		"lm_head.bias":                            {tinyV},
	}
	for i := 0; i < tinyL; i++ {
		p := fmt.Sprintf("esm.encoder.layer.%d.", i)
		for _, m := range []string{"query", "key", "value"} {
			s[p+"attention.self."+m+".weight"] = []int{tinyD, tinyD}
			s[p+"attention.self."+m+".bias"] = []int{tinyD}
		}
		s[p+"attention.self.rotary_embeddings.inv_freq"] = []int{tinyD / tinyH / 2}
		s[p+"attention.output.dense.weight"] = []int{tinyD, tinyD}
		s[p+"attention.output.dense.bias"] = []int{tinyD}
		s[p+"attention.LayerNorm.weight"] = []int{tinyD}
		s[p+"attention.LayerNorm.bias"] = []int{tinyD}
		s[p+"intermediate.dense.weight"] = []int{tinyF, tinyD}
		s[p+"intermediate.dense.bias"] = []int{tinyF}
		s[p+"output.dense.weight"] = []int{tinyD, tinyF}
		s[p+"output.dense.bias"] = []int{tinyD}
		s[p+"LayerNorm.weight"] = []int{tinyD}
		s[p+"LayerNorm.bias"] = []int{tinyD}
	}
	return s
}

// tinySpecs returns the tiny model's tensors in F32, each element = tensor index +
// element index / 1000, so values identify their tensor.
func tinySpecs() []stSpec {
	shapes := tinyShapes()
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	specs := make([]stSpec, 0, len(names)+1)
	for ti, n := range names {
		numel := 1
		for _, d := range shapes[n] {
			numel *= d
		}
		v := make([]float32, numel)
		for i := range v {
			v[i] = float32(ti) + float32(i)/1000
		}
		specs = append(specs, stSpec{name: n, dtype: F32, shape: shapes[n], data: f32Bytes(v...)})
	}
	// HF stores position_ids as an int64 buffer in some checkpoints.
	pos := make([]byte, 8*4)
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint64(pos[8*i:], uint64(i))
	}
	specs = append(specs, stSpec{name: "esm.embeddings.position_ids", dtype: I64, shape: []int{1, 4}, data: pos})
	return specs
}

// writeTinyModel writes config.json and model.safetensors of the tiny model into dir.
func writeTinyModel(t testing.TB, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(tinySpecs(), map[string]string{"format": "pt"}))
}

// tinyCheckpoint is the tiny model as an in-memory Checkpoint (no files), its
// tensors under their canonical names, without a config.
func tinyCheckpoint(t testing.TB) *Checkpoint {
	t.Helper()
	sf, err := parseSafetensors("tiny.safetensors", buildSafetensors(tinySpecs(), nil))
	if err != nil {
		t.Fatal(err)
	}
	c := &Checkpoint{Path: "tiny", Format: FormatSafetensors, Tensors: map[string]*Tensor{}}
	for _, raw := range sf.Names() {
		if name, keep := hfCanonicalName(raw); keep {
			if err := c.addTensor(name, sf.Tensors[raw]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}
