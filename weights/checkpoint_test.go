package weights

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/internal/memcap"
)

func TestOpenSafetensorsDir(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a .safetensors file name in the same directory") {
		t.Errorf("escaping shard: %v", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	t.Parallel()
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
		{"vocab", "vocab_size 34, want 33", func(c map[string]any) { c["vocab_size"] = 34 }, ""},
		{"mask id", "mask_token_id 5", func(c map[string]any) { c["mask_token_id"] = 5 }, ""},
		{"pad id", "pad_token_id 2", func(c map[string]any) { c["pad_token_id"] = 2 }, ""},
		{"odd head dim", "head dim 1 is odd", func(c map[string]any) { c["num_attention_heads"] = 8 }, ""},
		{"eps", "layer_norm_eps 2", func(c map[string]any) { c["layer_norm_eps"] = 2 }, ""},
		{"long model_type", "... (100000 bytes)", func(c map[string]any) { c["model_type"] = strings.Repeat("x", 100000) }, ""},
		{"float size", "config.json", nil, `{"hidden_size": 1e9}`},
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
			if err != nil && len(err.Error()) > 2000 {
				t.Errorf("error of %d bytes", len(err.Error()))
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

// A config.json claiming absurd sizes beside a tiny checkpoint gives a clean
// error naming the field, under a 256 MiB address-space cap: nothing is sized
// from the config before it is checked.
func TestOpenAbsurdConfig(t *testing.T) {
	t.Parallel()
	memcap.Run(t, 256<<20, func(t *testing.T) {
		for _, c := range []struct {
			want string
			mod  func(map[string]any)
		}{
			{"hidden_size 1000000000", func(c map[string]any) { c["hidden_size"] = 1_000_000_000; c["num_attention_heads"] = 1 }},
			{"num_hidden_layers 10000000", func(c map[string]any) { c["num_hidden_layers"] = 10_000_000 }},
			{"intermediate_size 1099511627776", func(c map[string]any) { c["intermediate_size"] = 1 << 40 }},
			{"vocab_size 2147483648", func(c map[string]any) { c["vocab_size"] = 1 << 31 }},
			{"hidden_size -8", func(c map[string]any) { c["hidden_size"] = -8 }},
			{"max_position_embeddings 4611686018427387904", func(c map[string]any) { c["max_position_embeddings"] = 1 << 62 }},
			{"max_position_embeddings -1", func(c map[string]any) { c["max_position_embeddings"] = -1 }},
			{"not a positive multiple of num_attention_heads 3", func(c map[string]any) { c["num_attention_heads"] = 3 }},
			{"num_attention_heads 0", func(c map[string]any) { c["num_attention_heads"] = 0 }},
		} {
			dir := t.TempDir()
			writeTinyModel(t, dir)
			writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(c.mod))
			ck, err := Open(dir)
			if err == nil {
				ck.Close()
				t.Errorf("%s: no error", c.want)
				continue
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "config.json") {
				t.Errorf("error %v should contain %q and the file name", err, c.want)
			}
		}
	})
}

// Sizes within the limits but not those of the tensors are caught by the
// tensor check, which names the config field and the tensor.
func TestOpenConfigTensorMismatch(t *testing.T) {
	t.Parallel()
	specsWith := func(mod func([]stSpec) []stSpec) []stSpec { return mod(tinySpecs()) }
	drop := func(name string) func([]stSpec) []stSpec {
		return func(s []stSpec) []stSpec {
			out := s[:0]
			for _, sp := range s {
				if sp.name != name {
					out = append(out, sp)
				}
			}
			return out
		}
	}
	add := func(name string, shape ...int) func([]stSpec) []stSpec {
		return func(s []stSpec) []stSpec {
			n := 1
			for _, d := range shape {
				n *= d
			}
			return append(s, stSpec{name, F32, shape, f32Bytes(make([]float32, n)...)})
		}
	}
	reshape := func(name string, shape ...int) func([]stSpec) []stSpec {
		return func(s []stSpec) []stSpec { return add(name, shape...)(drop(name)(s)) }
	}
	for _, c := range []struct {
		name  string
		cfg   func(map[string]any)
		specs func([]stSpec) []stSpec
		want  []string
	}{
		{"hidden size", func(c map[string]any) { c["hidden_size"] = 16 }, nil,
			[]string{"hidden_size=16", "embeddings.word_embeddings.weight is [33 8]", "model.safetensors"}},
		{"more layers", func(c map[string]any) { c["num_hidden_layers"] = 3 }, nil,
			[]string{"num_hidden_layers=3", "tensors of 2 layers"}},
		{"fewer layers", func(c map[string]any) { c["num_hidden_layers"] = 1 }, nil,
			[]string{"num_hidden_layers=1", "tensors of 2 layers (highest index 1)"}},
		{"intermediate size", func(c map[string]any) { c["intermediate_size"] = 64 }, nil,
			[]string{"intermediate_size=64", "encoder.layer.0.intermediate.dense.weight is [32 8]"}},
		{"heads", func(c map[string]any) { c["num_attention_heads"] = 4 }, nil,
			[]string{"rotary_embeddings.inv_freq\" is [2], want [1]", "num_attention_heads 4"}},
		{"missing tensor", nil, drop("esm.encoder.layer.1.output.dense.bias"),
			[]string{"1 tensors missing", `"encoder.layer.1.output.dense.bias" [8]`}},
		{"incomplete layers", func(c map[string]any) { c["num_hidden_layers"] = 3 }, func(s []stSpec) []stSpec {
			return add("esm.encoder.layer.2.LayerNorm.bias", tinyD)(drop("esm.encoder.layer.1.LayerNorm.bias")(s))
		}, []string{"16 tensors missing", `"encoder.layer.1.LayerNorm.bias" [8]`, `"encoder.layer.2.LayerNorm.weight" [8]`, "... and 6 more"}},
		{"layer gap", func(c map[string]any) { c["num_hidden_layers"] = 3 }, func(s []stSpec) []stSpec {
			var out []stSpec
			for _, sp := range s {
				if strings.HasPrefix(sp.name, "esm.encoder.layer.1.") {
					sp.name = strings.Replace(sp.name, ".layer.1.", ".layer.2.", 1)
				}
				out = append(out, sp)
			}
			return out
		}, []string{"num_hidden_layers=3", "tensors of 2 layers (highest index 2)"}},
		{"partial lm head", nil, drop("lm_head.bias"), []string{`"lm_head.bias" [33]`}},
		{"zero dim", nil, reshape("esm.encoder.layer.0.attention.self.query.weight", tinyD, 0),
			[]string{`"encoder.layer.0.attention.self.query.weight" is [8 0], want [8 8]`}},
		{"decoder shape", nil, add("lm_head.decoder.weight", tinyV, tinyD+1), []string{`"lm_head.decoder.weight" is [33 9], want [33 8]`}},
		{"esm-1b positions", nil, add("esm.embeddings.position_embeddings.weight", 1026, tinyD),
			[]string{"an ESM2 model does not have", `"embeddings.position_embeddings.weight"`}},
		{"unknown layer tensor", nil, add("esm.encoder.layer.1.crossattention.self.query.weight", tinyD, tinyD),
			[]string{"an ESM2 model does not have", `"encoder.layer.1.crossattention.self.query.weight"`}},
		{"bad layer index", nil, add("esm.encoder.layer.01.LayerNorm.bias", tinyD), []string{`"encoder.layer.01.LayerNorm.bias"`}},
		{"no embeddings", nil, drop("esm.embeddings.word_embeddings.weight"), []string{"no embeddings.word_embeddings.weight tensor"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(c.cfg))
			specs := tinySpecs()
			if c.specs != nil {
				specs = specsWith(c.specs)
			}
			writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(specs, nil))
			ck, err := Open(dir)
			if err == nil {
				ck.Close()
				t.Fatal("no error")
			}
			for _, w := range append(c.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %v should contain %q", err, w)
				}
			}
		})
	}
	// Extra tensors outside the model's names (a classifier, a pooler) are
	// ignored, and so is the contact head's shape (the model never loads it).
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	specs := add("classifier.dense.weight", 2, tinyD)(add("esm.pooler.dense.bias", tinyD)(reshape("esm.contact_head.regression.weight", 3, 2)(tinySpecs())))
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(specs, nil))
	ck, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck.Close()
}

// A long list of problems is cut to its first entries and a count.
func TestOpenErrorListsCapped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	specs := tinySpecs()
	for i := range 5000 {
		specs = append(specs, stSpec{fmt.Sprintf("esm.encoder.layer.0.extra%05d.%s", i, strings.Repeat("x", 300)), F32, []int{1}, f32Bytes(0)})
	}
	writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(specs, nil))
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "5000 tensors an ESM2 model does not have") || !strings.Contains(err.Error(), "... and 4990 more") {
		t.Fatalf("error: %.500v", err)
	}
	if len(err.Error()) > 4000 {
		t.Errorf("error of %d bytes", len(err.Error()))
	}
}

// writeIndex writes model.safetensors.index.json with the given weight map.
func writeIndex(t *testing.T, dir string, body string) string {
	t.Helper()
	p := filepath.Join(dir, "model.safetensors.index.json")
	writeFile(t, p, []byte(body))
	return p
}

// The index of a sharded checkpoint is bounded and may only name shard files
// in its own directory.
func TestOpenShardIndexLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	writeFile(t, filepath.Join(dir, "model-1.safetensors"), buildSafetensors(tinySpecs(), nil))
	manyShards := func(n int) string {
		wm := map[string]string{}
		for i := range n {
			wm[fmt.Sprintf("t%d", i)] = fmt.Sprintf("model-%d.safetensors", i)
		}
		b, _ := json.Marshal(map[string]any{"weight_map": wm})
		return string(b)
	}
	manyTensors := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"weight_map":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"t%d":"model-1.safetensors"`, i)
		}
		b.WriteString(`}}`)
		return b.String()
	}
	for _, c := range []struct{ name, body, want string }{
		{"parent dir", `{"weight_map":{"x":"../model-1.safetensors"}}`, `shard "../model-1.safetensors" is not a .safetensors file name in the same directory`},
		{"absolute", `{"weight_map":{"x":"/etc/passwd"}}`, `shard "/etc/passwd" is not`},
		{"subdir", `{"weight_map":{"x":"sub/model-1.safetensors"}}`, `shard "sub/model-1.safetensors" is not`},
		{"backslash", `{"weight_map":{"x":"..\\model-1.safetensors"}}`, `is not a .safetensors file name`},
		{"not safetensors", `{"weight_map":{"x":"config.json"}}`, `shard "config.json" is not a .safetensors file name`},
		{"dot dot", `{"weight_map":{"x":".."}}`, `shard ".." is not`},
		{"empty", `{"weight_map":{"x":""}}`, `shard "" is not`},
		{"duplicate", `{"weight_map":{"x":"model-1.safetensors","x":"model-2.safetensors"}}`, `duplicate key "x"`},
		{"no map", `{"metadata":{}}`, "empty or missing weight_map"},
		{"not a string", `{"weight_map":{"x":1}}`, `weight_map["x"]`},
		{"trailing", `{"weight_map":{"x":"model-1.safetensors"}} x`, "after the JSON object"},
		{"too many shards", manyShards(maxShards + 1), fmt.Sprintf("more than %d shard files", maxShards)},
		{"too many tensors", manyTensors(maxIndexTensors + 1), fmt.Sprintf("more than %d tensors", maxIndexTensors)},
		{"missing listed", manyTensors(3000), "3000 tensors it lists are missing from their shards"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeIndex(t, dir, c.body)
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %.600v should name %s and contain %q", err, p, c.want)
			}
			if len(err.Error()) > 2000 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
		})
	}
	// An index (or a config.json) too large to be real is refused by its size,
	// before it is read: a sparse file costs no disk.
	for _, name := range []string{"model.safetensors.index.json", "config.json"} {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 40); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "byte limit") || !strings.Contains(err.Error(), p) {
			t.Errorf("%s of 1 TiB: %v", name, err)
		}
		writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
	}
}

// A NaN or Inf anywhere in a weight fails its conversion, naming the file, the
// tensor (canonical and stored names) and the first bad element.
func TestCheckpointNonFinite(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		dtype DType
		bits  uint32 // the bad value's bits in dtype
		want  string
	}{
		{F32, 0x7fc00000, "is NaN"},
		{F32, 0xff800000, "is -Inf"},
		{F16, 0x7e00, "is NaN"},
		{F16, 0x7c00, "is +Inf"},
		{BF16, 0x7fc1, "is NaN"},
		{BF16, 0xff80, "is -Inf"},
	} {
		t.Run(fmt.Sprintf("%s_%x", c.dtype, c.bits), func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), tinyConfigJSON(nil))
			const target = "esm.encoder.layer.1.attention.self.query.weight"
			const bad = 3*tinyD + 5 // element [3 5]
			specs := tinySpecs()
			for i, s := range specs {
				if s.name != target {
					continue
				}
				n := tinyD * tinyD
				switch c.dtype {
				case F32:
					v := make([]float32, n)
					for j := range v {
						v[j] = float32(j) / 7
					}
					specs[i].data = f32Bytes(v...)
					binary.LittleEndian.PutUint32(specs[i].data[4*bad:], c.bits)
				default:
					v := make([]uint16, n)
					for j := range v {
						v[j] = 0x3c00 // 1.0 in F16, 1.875 in BF16
					}
					v[bad] = uint16(c.bits)
					specs[i].data = u16Bytes(v...)
				}
				specs[i].dtype = c.dtype
			}
			writeFile(t, filepath.Join(dir, "model.safetensors"), buildSafetensors(specs, nil))
			ck, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			tn, err := ck.Tensor("encoder.layer.1.attention.self.query.weight", tinyD, tinyD)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tn.Float32()
			var nf *NonFiniteError
			if !errors.As(err, &nf) || nf.Index != bad || nf.Stored != target {
				t.Fatalf("error %v, want a NonFiniteError at %d", err, bad)
			}
			for _, w := range []string{filepath.Join(dir, "model.safetensors"), `"encoder.layer.1.attention.self.query.weight"`, target, "element 29 [3 5]", c.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q should contain %q", err, w)
				}
			}
			// Every other tensor converts.
			for name, other := range ck.Tensors {
				if other != tn {
					if _, err := other.Float32(); err != nil {
						t.Errorf("%s: %v", name, err)
					}
				}
			}
		})
	}
}

// The check is folded into the parallel conversion of large tensors: the
// first bad element is found wherever it lies, in any chunk and in the
// unrolled part or the tail of a chunk.
func TestFloat32NonFiniteLarge(t *testing.T) {
	t.Parallel()
	n := 2<<20 + 3 // two chunks on two cores or more, and a ragged tail
	for _, dt := range []DType{F32, F16, BF16} {
		for _, at := range []int{0, 1, 4095, 4096, n / 2, n - 4, n - 1} {
			tn := &Tensor{Name: "w", DType: dt, Shape: []int{n}, data: make([]byte, n*dt.Size()), file: "big.safetensors"}
			for _, i := range []int{at, n - 1} { // a second bad value after the first
				switch dt {
				case F32:
					binary.LittleEndian.PutUint32(tn.data[4*i:], 0x7f800001)
				case F16:
					binary.LittleEndian.PutUint16(tn.data[2*i:], 0xfc00)
				case BF16:
					binary.LittleEndian.PutUint16(tn.data[2*i:], 0x7f81)
				}
			}
			_, err := tn.Float32()
			var nf *NonFiniteError
			if !errors.As(err, &nf) || nf.Index != at {
				t.Errorf("%s, bad at %d: %v", dt, at, err)
			}
		}
		// The largest finite values and the smallest subnormals pass.
		tn := &Tensor{Name: "w", DType: dt, Shape: []int{n}, data: make([]byte, n*dt.Size())}
		for i := 0; i < n; i++ {
			switch dt {
			case F32:
				binary.LittleEndian.PutUint32(tn.data[4*i:], []uint32{0x7f7fffff, 0xff7fffff, 1, 0x807fffff}[i%4])
			case F16:
				binary.LittleEndian.PutUint16(tn.data[2*i:], []uint16{0x7bff, 0xfbff, 1, 0x83ff}[i%4])
			case BF16:
				binary.LittleEndian.PutUint16(tn.data[2*i:], []uint16{0x7f7f, 0xff7f, 1, 0x807f}[i%4])
			}
		}
		if _, err := tn.Float32(); err != nil {
			t.Errorf("%s finite extremes: %v", dt, err)
		}
	}
}

// TestOpenPytorchBinNamed: a directory with only pytorch_model.bin says that
// format is not read and how to get safetensors.
func TestOpenPytorchBinNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := os.ReadFile("../tests/testdata/models/tiny/config.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
	os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("PK\x03\x04"), 0o644)
	_, err = Open(dir)
	if err == nil || !strings.Contains(err.Error(), "pytorch_model.bin (PyTorch pickles) is not read") {
		t.Fatalf("error %v", err)
	}
}
