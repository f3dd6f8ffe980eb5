package weights

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenSafetensorsDir(t *testing.T) {
	dir := t.TempDir()
	writeTinyModel(t, dir)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Format != FormatSafetensors || c.Config.NumHiddenLayers != tinyL || c.Config.HiddenSize != tinyD {
		t.Errorf("format %q config %+v", c.Format, c.Config)
	}
	for raw, shape := range tinyShapes() {
		name := strings.TrimPrefix(raw, "esm.")
		tn, err := c.Tensor(name, shape...)
		if err != nil {
			t.Errorf("Tensor(%q): %v", name, err)
			continue
		}
		if tn.Name != name {
			t.Errorf("name %q, want %q", tn.Name, name)
		}
	}
	if _, ok := c.Tensors["embeddings.position_ids"]; ok {
		t.Error("position_ids buffer should be dropped")
	}
	if len(c.Tensors) != len(tinyShapes()) {
		t.Errorf("%d tensors, want %d", len(c.Tensors), len(tinyShapes()))
	}
	// Values: the word embeddings tensor's first values identify it.
	w, _ := c.Tensor("embeddings.word_embeddings.weight")
	v, err := w.Float32()
	if err != nil || len(v) != tinyV*tinyD || v[1]-v[0] < 0.0009 {
		t.Errorf("word embeddings: %v %v", v[:2], err)
	}

	_, err = c.Tensor("encoder.layer.0.intermediate.dense.weight", tinyD, tinyF)
	want := fmt.Sprintf("shape [%d %d], want [%d %d]", tinyF, tinyD, tinyD, tinyF)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "model.safetensors") ||
		!strings.Contains(err.Error(), "encoder.layer.0.intermediate.dense.weight") {
		t.Errorf("wrong shape error: %v", err)
	}
	_, err = c.Tensor("lm_head.decoder.weight")
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), dir) {
		t.Errorf("missing tensor error: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenShardedDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	specs := tinySpecs()
	half := len(specs) / 2
	shards := [][]stSpec{specs[:half], specs[half:]}
	wm := map[string]string{}
	for i, s := range shards {
		name := fmt.Sprintf("model-%05d-of-00002.safetensors", i+1)
		writeFile(t, filepath.Join(dir, name), buildSafetensors(s, nil))
		for _, sp := range s {
			wm[sp.name] = name
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 1}, "weight_map": wm})
	writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), idx)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tensors) != len(tinyShapes()) || len(c.files) != 2 {
		t.Errorf("%d tensors from %d files", len(c.Tensors), len(c.files))
	}
	c.Close()

	// A tensor listed in the index but absent from its shard.
	wm["esm.extra.weight"] = "model-00001-of-00002.safetensors"
	idx, _ = json.Marshal(map[string]any{"weight_map": wm})
	writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), idx)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "esm.extra.weight") {
		t.Errorf("missing shard tensor: %v", err)
	}
	// A shard path escaping the directory.
	wm = map[string]string{"x": "../evil.safetensors"}
	idx, _ = json.Marshal(map[string]any{"weight_map": wm})
	writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), idx)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a file name") {
		t.Errorf("escaping shard: %v", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	cases := []struct {
		name, want string
		mod        func(map[string]any)
		raw        string
	}{
		{"model_type", `model_type "bert"`, func(c map[string]any) { c["model_type"] = "bert" }, ""},
		{"absolute", "position_embedding_type", func(c map[string]any) { c["position_embedding_type"] = "absolute" }, ""},
		{"ln before", "emb_layer_norm_before", func(c map[string]any) { c["emb_layer_norm_before"] = true }, ""},
		{"folding", "is_folding_model", func(c map[string]any) { c["is_folding_model"] = true }, ""},
		{"heads", "multiple of num_attention_heads", func(c map[string]any) { c["num_attention_heads"] = 3 }, ""},
		{"layers", "num_hidden_layers 0", func(c map[string]any) { c["num_hidden_layers"] = 0 }, ""},
		{"unparseable", "config.json", nil, `{"model_type": "esm",`},
		{"wrong type", "config.json", nil, `{"hidden_size": "big"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTinyModel(t, dir)
			body := tinyConfigJSON(c.mod)
			if c.raw != "" {
				body = []byte(c.raw)
			}
			writeFile(t, filepath.Join(dir, "config.json"), body)
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "config.json") {
				t.Errorf("error %v should contain %q and the file name", err, c.want)
			}
		})
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(tinySpecs(), nil))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("missing config: %v", err)
	}
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("missing weights: %v", err)
	}
}

func TestConfigDtypeSpellings(t *testing.T) {
	c, err := ParseConfig([]byte(`{"dtype":"bfloat16"}`))
	if err != nil || c.TorchDtype != "bfloat16" {
		t.Errorf("dtype: %q %v", c.TorchDtype, err)
	}
	c, err = ParseConfig([]byte(`{"torch_dtype":"float16","dtype":"bfloat16"}`))
	if err != nil || c.TorchDtype != "float16" {
		t.Errorf("torch_dtype wins: %q %v", c.TorchDtype, err)
	}
}

func TestOpenRejectsIntWeights(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors([]stSpec{{"esm.x", I32, []int{1}, []byte{1, 0, 0, 0}}}, nil))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "F32, F16 or BF16") {
		t.Errorf("int weights: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "nope")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing path: %v", err)
	}
}

func TestOpenSafetensorsFileNeedsDir(t *testing.T) {
	dir := t.TempDir()
	writeTinyModel(t, dir)
	if _, err := Open(filepath.Join(dir, "model.safetensors")); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("file instead of dir: %v", err)
	}
}

// Files saved by transformers 5.x name LayerNorm parameters gamma/beta and
// keep one rotary buffer under a wildcard key; they load under the
// canonical names.
func TestOpenTransformers5Names(t *testing.T) {
	var specs []stSpec
	for _, s := range tinySpecs() {
		switch {
		case strings.HasSuffix(s.name, "attention.self.rotary_embeddings.inv_freq"):
			if strings.Contains(s.name, ".layer.0.") {
				s.name = "esm.encoder.layer.*.attention.self.rotary_embeddings.inv_freq"
				specs = append(specs, s)
			}
			continue
		case strings.Contains(s.name, ".encoder.layer.") && strings.HasSuffix(s.name, "LayerNorm.weight"):
			s.name = strings.TrimSuffix(s.name, "weight") + "gamma"
		case strings.Contains(s.name, ".encoder.layer.") && strings.HasSuffix(s.name, "LayerNorm.bias"):
			s.name = strings.TrimSuffix(s.name, "bias") + "beta"
		}
		specs = append(specs, s)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(specs, map[string]string{"format": "pt"}))
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{
		"encoder.layer.0.attention.LayerNorm.weight", "encoder.layer.1.attention.LayerNorm.bias",
		"encoder.layer.0.LayerNorm.weight", "encoder.layer.1.LayerNorm.bias",
		"encoder.layer.0.attention.self.rotary_embeddings.inv_freq", "encoder.emb_layer_norm_after.weight",
	} {
		if _, ok := c.Tensors[name]; !ok {
			t.Errorf("canonical tensor %s missing; have %v", name, c.Names())
		}
	}
	for name := range c.Tensors {
		if strings.HasSuffix(name, "gamma") || strings.HasSuffix(name, "beta") || strings.Contains(name, "*") {
			t.Errorf("non-canonical name %s left in the checkpoint", name)
		}
	}
}
