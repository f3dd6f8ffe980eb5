package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Checkpoint formats.
const (
	FormatSafetensors = "safetensors"
	FormatFairESM     = "fair-esm-pt"
)

// Checkpoint is an opened model: its config and its tensors by canonical name (the
// HF EsmModel names without the "esm." prefix; lm_head.* as in EsmForMaskedLM).
// Tensors alias read-only mappings and stay valid until Close.
type Checkpoint struct {
	Path    string // the directory or .pt file it came from
	Format  string // FormatSafetensors or FormatFairESM
	Config  Config
	Tensors map[string]*Tensor // by canonical name

	files []*mappedFile
}

// Open opens a model: a directory holding config.json and model.safetensors (or a
// sharded model.safetensors.index.json and its shards), or a fair-esm .pt file.
// The config is validated; tensor shapes are checked by the caller through Tensor.
func Open(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	if st.IsDir() {
		return openSafetensorsDir(path)
	}
	if strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".json") {
		return nil, fmt.Errorf("open checkpoint %s: pass the directory that holds config.json and the safetensors weights", path)
	}
	return openFairESM(path)
}

// Tensor returns the tensor called name (canonical name). When shape is given, the
// tensor's shape must equal it. Errors name the file, the tensor and both shapes.
func (c *Checkpoint) Tensor(name string, shape ...int) (*Tensor, error) {
	t, ok := c.Tensors[name]
	if !ok {
		hint := ""
		if name == "lm_head.decoder.weight" {
			hint = " (it is usually tied to embeddings.word_embeddings.weight)"
		}
		return nil, fmt.Errorf("%s: tensor %q not found among %d tensors%s", c.Path, name, len(c.Tensors), hint)
	}
	if len(shape) > 0 && !shapeEqual(t.Shape, shape) {
		return nil, fmt.Errorf("%s: tensor %q: shape %v, want %v", t.file, name, t.Shape, shape)
	}
	return t, nil
}

// Names returns the canonical tensor names in sorted order.
func (c *Checkpoint) Names() []string {
	names := make([]string, 0, len(c.Tensors))
	for n := range c.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Close unmaps the checkpoint's files; its tensors must not be used afterwards.
func (c *Checkpoint) Close() error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, m := range c.files {
		errs = append(errs, m.close())
	}
	c.files = nil
	return errors.Join(errs...)
}

// rotaryCanonical is where the rotary inv_freq buffer lives in the
// canonical names (layer 0's copy; every layer holds the same values).
const rotaryCanonical = "encoder.layer.0.attention.self.rotary_embeddings.inv_freq"

// hfCanonicalName maps an HF EsmModel / EsmForMaskedLM state-dict name to the
// canonical name; ok is false for buffers the model never needs.
//
// Besides the released ESM2 names it accepts what transformers 5.x's
// save_pretrained writes (seen with 5.17): LayerNorm parameters inside the
// layers as ".LayerNorm.gamma"/".LayerNorm.beta", and one rotary buffer under a
// literal wildcard key "esm.encoder.layer.*.attention.self.rotary_embeddings.inv_freq"
// (in memory: "esm.rotary_embeddings.inv_freq").
func hfCanonicalName(raw string) (name string, ok bool) {
	name = strings.TrimPrefix(raw, "esm.")
	switch {
	case name == "embeddings.position_ids":
		return "", false
	case name == "encoder.layer.*.attention.self.rotary_embeddings.inv_freq", name == "rotary_embeddings.inv_freq":
		return rotaryCanonical, true
	case strings.HasSuffix(name, "LayerNorm.gamma"):
		return strings.TrimSuffix(name, "gamma") + "weight", true
	case strings.HasSuffix(name, "LayerNorm.beta"):
		return strings.TrimSuffix(name, "beta") + "bias", true
	}
	return name, true
}

// addTensor stores t under its canonical name, rejecting duplicates and non-float
// dtypes.
func (c *Checkpoint) addTensor(canonical string, t *Tensor) error {
	if !t.DType.isFloat() {
		return fmt.Errorf("%s: tensor %q: dtype %s, model weights must be F32, F16 or BF16", t.file, t.Name, t.DType)
	}
	if prev, dup := c.Tensors[canonical]; dup {
		return fmt.Errorf("%s: tensors %q and %q both map to %q", t.file, prev.Name, t.Name, canonical)
	}
	t2 := *t
	t2.Name = canonical
	c.Tensors[canonical] = &t2
	return nil
}

type safetensorsIndex struct {
	WeightMap map[string]string `json:"weight_map"`
}

func openSafetensorsDir(dir string) (ckpt *Checkpoint, err error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: dir, Format: FormatSafetensors, Config: cfg, Tensors: map[string]*Tensor{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	single := filepath.Join(dir, "model.safetensors")
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	var shards []string
	var weightMap map[string]string
	switch {
	case fileExists(single):
		shards = []string{"model.safetensors"}
	case fileExists(indexPath):
		weightMap, shards, err = readIndex(indexPath)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: neither model.safetensors nor model.safetensors.index.json found", dir)
	}

	for _, shard := range shards {
		sf, err := OpenSafetensors(filepath.Join(dir, shard))
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, sf.m)
		for _, raw := range sf.Names() {
			t := sf.Tensors[raw]
			if weightMap != nil {
				if want, listed := weightMap[raw]; listed && want != shard {
					continue // the index says another shard owns it
				}
			}
			name, keep := hfCanonicalName(raw)
			if !keep {
				continue
			}
			if err := c.addTensor(name, t); err != nil {
				return nil, err
			}
		}
		if weightMap != nil {
			for raw, want := range weightMap {
				if want == shard {
					if _, ok := sf.Tensors[raw]; !ok {
						return nil, fmt.Errorf("%s: tensor %q listed in %s is missing", sf.Path, raw, indexPath)
					}
				}
			}
		}
	}
	return c, nil
}

// readIndex parses a model.safetensors.index.json: its weight map and the sorted,
// distinct shard file names (plain names in the same directory).
func readIndex(indexPath string) (map[string]string, []string, error) {
	data, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	var idx safetensorsIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("%s: empty weight_map", indexPath)
	}
	var shards []string
	seen := map[string]bool{}
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsRune(shard, '\\') {
			return nil, nil, fmt.Errorf("%s: tensor %q: shard %q is not a file name in the same directory", indexPath, name, shard)
		}
		if !seen[shard] {
			seen[shard] = true
			shards = append(shards, shard)
		}
	}
	sort.Strings(shards)
	return idx.WeightMap, shards, nil
}

// shardNames returns the shard files named by a safetensors index.
func shardNames(indexPath string) ([]string, error) {
	_, shards, err := readIndex(indexPath)
	return shards, err
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
