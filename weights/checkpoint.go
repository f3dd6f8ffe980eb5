package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
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
//
// Nothing is sized from the config before it has been checked twice: on its
// own (Config.Validate: an ESM2 encoder, sizes within documented limits), then
// against the tensors the checkpoint holds (checkTensors: layer count, every
// tensor the model loads present with the shape the config implies). So a
// Checkpoint's Config can be trusted to size buffers. Values are checked
// (NaN, Inf) when a tensor is converted (Tensor.Float32).
func Open(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	var c *Checkpoint
	switch {
	case st.IsDir():
		c, err = openSafetensorsDir(path)
	case strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".json"):
		return nil, fmt.Errorf("open checkpoint %s: pass the directory that holds config.json and the safetensors weights", path)
	default:
		c, err = openFairESM(path)
	}
	if err != nil {
		return nil, err
	}
	if err := c.checkTensors(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
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
		return nil, fmt.Errorf("%s: tensor %s not found among %d tensors%s", c.Path, quoteName(name), len(c.Tensors), hint)
	}
	if len(shape) > 0 && !shapeEqual(t.Shape, shape) {
		return nil, fmt.Errorf("%s: tensor %s: shape %v, want %v", t.file, quoteName(name), t.Shape, shape)
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
		return fmt.Errorf("%s: tensor %s: dtype %s, model weights must be F32, F16 or BF16", t.file, quoteName(t.Name), t.DType)
	}
	if prev, dup := c.Tensors[canonical]; dup {
		return fmt.Errorf("%s: tensors %s and %s both map to %s", t.file, quoteName(prev.raw), quoteName(t.Name), quoteName(canonical))
	}
	t2 := *t
	if t2.raw == "" {
		t2.raw = t.Name
	}
	t2.Name = canonical
	c.Tensors[canonical] = &t2
	return nil
}

// Limits on a sharded checkpoint's index (model.safetensors.index.json).
const (
	// maxIndexBytes: the index of ESM2 15B is about 100 KB.
	maxIndexBytes = 16 << 20
	// maxIndexTensors: ESM2 15B has about 800 tensors.
	maxIndexTensors = 1 << 16
	// maxShards: every shard is opened and mapped; ESM2 15B in float32 at
	// transformers' default 5 GB per shard needs 12.
	maxShards = 1024
)

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
	var idx *shardIndex
	shards := []string{"model.safetensors"}
	switch {
	case fileExists(single):
	case fileExists(indexPath):
		idx, err = readIndex(indexPath)
		if err != nil {
			return nil, err
		}
		shards = idx.shards
	default:
		for _, bin := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json"} {
			if fileExists(filepath.Join(dir, bin)) {
				return nil, fmt.Errorf("%s: neither model.safetensors nor model.safetensors.index.json found; %s (PyTorch pickles) is not read: save the model with safetensors (transformers: model.save_pretrained(dir, safe_serialization=True)), or use the hub's safetensors files", dir, bin)
			}
		}
		return nil, fmt.Errorf("%s: neither model.safetensors nor model.safetensors.index.json found", dir)
	}

	var missing []string // listed in the index, absent from their shard
	for _, shard := range shards {
		sf, err := OpenSafetensors(filepath.Join(dir, shard))
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, sf.m)
		for _, raw := range sf.Names() {
			t := sf.Tensors[raw]
			if idx != nil {
				if want, listed := idx.weightMap[raw]; listed && want != shard {
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
		if idx != nil {
			for _, raw := range idx.byShard[shard] {
				if _, ok := sf.Tensors[raw]; !ok {
					missing = append(missing, shard+": "+quoteName(raw))
				}
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: %d tensors it lists are missing from their shards: %s", indexPath, len(missing), nameList(missing))
	}
	return c, nil
}

// shardIndex is a parsed model.safetensors.index.json.
type shardIndex struct {
	weightMap map[string]string   // tensor name -> shard file name
	byShard   map[string][]string // shard -> its tensor names, sorted
	shards    []string            // distinct shard file names, sorted
}

// readIndex parses a model.safetensors.index.json: its weight map and the
// distinct shard files. The file, the number of tensors and of shards are
// bounded (maxIndexBytes, maxIndexTensors, maxShards); a shard must be a plain
// *.safetensors file name in the same directory; duplicate keys are errors.
func readIndex(indexPath string) (*shardIndex, error) {
	data, err := readLimited(indexPath, maxIndexBytes)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	idx := &shardIndex{weightMap: map[string]string{}, byShard: map[string][]string{}}
	dec := json.NewDecoder(bytes.NewReader(data))
	err = jsonObject(dec, func(key string) error {
		if key != "weight_map" {
			var skip json.RawMessage // "metadata" and anything else
			return dec.Decode(&skip)
		}
		return jsonObject(dec, func(name string) error {
			if len(idx.weightMap) >= maxIndexTensors {
				return fmt.Errorf("weight_map lists more than %d tensors (ESM2 15B has about 800)", maxIndexTensors)
			}
			var shard string
			if err := dec.Decode(&shard); err != nil {
				return fmt.Errorf("weight_map[%s]: %w", quoteName(name), err)
			}
			if err := checkShardName(shard); err != nil {
				return fmt.Errorf("tensor %s: %w", quoteName(name), err)
			}
			if _, seen := idx.byShard[shard]; !seen {
				if len(idx.byShard) >= maxShards {
					return fmt.Errorf("weight_map names more than %d shard files", maxShards)
				}
				idx.shards = append(idx.shards, shard)
			}
			idx.weightMap[name] = shard
			idx.byShard[shard] = append(idx.byShard[shard], name)
			return nil
		})
	})
	if err == nil {
		err = jsonEnd(dec)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", indexPath, err)
	}
	if len(idx.weightMap) == 0 {
		return nil, fmt.Errorf("%s: empty or missing weight_map", indexPath)
	}
	sort.Strings(idx.shards)
	for _, names := range idx.byShard {
		sort.Strings(names)
	}
	return idx, nil
}

// checkShardName accepts a plain *.safetensors file name: no directory part
// (so no "../" or absolute path can leave the checkpoint's directory).
func checkShardName(shard string) error {
	if shard == "" || len(shard) > 255 || shard != filepath.Base(shard) || strings.ContainsAny(shard, "/\\\x00") ||
		shard == "." || shard == ".." || !strings.HasSuffix(shard, ".safetensors") {
		return fmt.Errorf("shard %s is not a .safetensors file name in the same directory", quoteName(shard))
	}
	return nil
}

// shardNames returns the shard files named by a safetensors index.
func shardNames(indexPath string) ([]string, error) {
	idx, err := readIndex(indexPath)
	if err != nil {
		return nil, err
	}
	return idx.shards, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// Errors quote names read from files through these two, so that a hostile
// file cannot make an error message megabytes long.
const (
	maxQuoted = 200 // bytes of one quoted name
	maxListed = 10  // names of one list
)

// quoteName quotes s for an error message, cut to maxQuoted bytes.
func quoteName(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// capList lists n items for an error message: item(i) for the first
// maxListed, then "... and N more".
func capList(n int, item func(i int) string) string {
	var b strings.Builder
	for i := range min(n, maxListed) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(item(i))
	}
	if n > maxListed {
		fmt.Fprintf(&b, ", ... and %d more", n-maxListed)
	}
	return b.String()
}

// nameList lists already formatted items through capList.
func nameList(items []string) string {
	return capList(len(items), func(i int) string { return items[i] })
}

// layerTensor is one tensor every transformer layer has, and its shape in
// terms of the config (D hidden size, F intermediate size).
type layerTensor struct {
	suffix string
	shape  func(D, F int) []int
}

var (
	shapeDD = func(D, F int) []int { return []int{D, D} }
	shapeD  = func(D, F int) []int { return []int{D} }
	// layerTensors are the canonical names under "encoder.layer.<i>.".
	layerTensors = []layerTensor{
		{"attention.self.query.weight", shapeDD}, {"attention.self.query.bias", shapeD},
		{"attention.self.key.weight", shapeDD}, {"attention.self.key.bias", shapeD},
		{"attention.self.value.weight", shapeDD}, {"attention.self.value.bias", shapeD},
		{"attention.output.dense.weight", shapeDD}, {"attention.output.dense.bias", shapeD},
		{"attention.LayerNorm.weight", shapeD}, {"attention.LayerNorm.bias", shapeD},
		{"intermediate.dense.weight", func(D, F int) []int { return []int{F, D} }},
		{"intermediate.dense.bias", func(D, F int) []int { return []int{F} }},
		{"output.dense.weight", func(D, F int) []int { return []int{D, F} }}, {"output.dense.bias", shapeD},
		{"LayerNorm.weight", shapeD}, {"LayerNorm.bias", shapeD},
	}
)

const (
	layerPrefix    = "encoder.layer."
	embeddingsName = "embeddings.word_embeddings.weight"
	rotarySuffix   = "attention.self.rotary_embeddings.inv_freq"
)

// layerIndex parses the "<i>." after "encoder.layer." in a canonical name:
// decimal digits without a leading zero, below 1<<20; ok is false otherwise.
func layerIndex(name string) (i int, rest string, ok bool) {
	s, found := strings.CutPrefix(name, layerPrefix)
	if !found {
		return 0, "", false
	}
	dot := strings.IndexByte(s, '.')
	if dot <= 0 || dot > 7 || (s[0] == '0' && dot > 1) {
		return 0, "", false
	}
	for _, r := range s[:dot] {
		if r < '0' || r > '9' {
			return 0, "", false
		}
		i = 10*i + int(r-'0')
	}
	return i, s[dot+1:], true
}

// checkTensors checks the config against the tensors: the word embeddings'
// shape gives vocab_size and hidden_size, the "encoder.layer.<i>." tensors
// give num_hidden_layers (layers 0..L-1, each complete), the FFN and rotary
// shapes give intermediate_size and the head dim, and every tensor the model
// loads must be present with the shape the config implies. Names under
// "embeddings.", "encoder." and "lm_head." that the model does not know are
// errors (a different architecture); others (contact_head, a pooler, a
// classifier) are ignored. Dtypes were checked when the tensors were added
// (F32, F16 or BF16 only; they may differ from torch_dtype and from each
// other, since each tensor is converted on its own).
func (c *Checkpoint) checkTensors() error {
	cfg := c.Config
	src := filepath.Join(c.Path, "config.json")
	if c.Format == FormatFairESM {
		src = c.Path + " (its cfg)"
	}
	D, F, L, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.NumHiddenLayers, cfg.VocabSize

	emb, ok := c.Tensors[embeddingsName]
	if !ok {
		return fmt.Errorf("%s: no %s tensor; not an ESM2 checkpoint", c.Path, embeddingsName)
	}
	if !shapeEqual(emb.Shape, []int{V, D}) {
		return fmt.Errorf("%s: %s says vocab_size=%d, hidden_size=%d but %s is %v in %s", c.Path, src, V, D, embeddingsName, emb.Shape, emb.file)
	}

	layers := map[int]bool{}
	var unexpected []string
	for name := range c.Tensors {
		if i, _, ok := layerIndex(name); ok {
			layers[i] = true
		} else if strings.HasPrefix(name, layerPrefix) {
			unexpected = append(unexpected, name)
		}
	}
	if len(layers) != L || !layers[L-1] {
		top := -1
		for i := range layers {
			top = max(top, i)
		}
		return fmt.Errorf("%s: %s says num_hidden_layers=%d but the checkpoint holds tensors of %d layers (highest index %d)", c.Path, src, L, len(layers), top)
	}
	if fc1, ok := c.Tensors[layerPrefix+"0.intermediate.dense.weight"]; ok && !shapeEqual(fc1.Shape, []int{F, D}) {
		return fmt.Errorf("%s: %s says intermediate_size=%d, hidden_size=%d but %s is %v in %s", c.Path, src, F, D, fc1.Name, fc1.Shape, fc1.file)
	}

	want := map[string][]int{
		embeddingsName:                        {V, D},
		"encoder.emb_layer_norm_after.weight": {D},
		"encoder.emb_layer_norm_after.bias":   {D},
	}
	for i := range L {
		for _, lt := range layerTensors {
			want[fmt.Sprintf("%s%d.%s", layerPrefix, i, lt.suffix)] = lt.shape(D, F)
		}
	}
	optional := map[string][]int{"lm_head.decoder.weight": {V, D}}
	lmHead := map[string][]int{
		"lm_head.dense.weight": {D, D}, "lm_head.dense.bias": {D},
		"lm_head.layer_norm.weight": {D}, "lm_head.layer_norm.bias": {D},
		"lm_head.bias": {V},
	}
	var hasLM bool
	for name := range c.Tensors {
		if strings.HasPrefix(name, "lm_head.") {
			hasLM = true
		}
	}
	if hasLM { // an LM head is optional, but whole when present
		maps.Copy(want, lmHead)
	}

	var missing, wrong []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		t, ok := c.Tensors[name]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprintf("%s %v", quoteName(name), want[name]))
		case !shapeEqual(t.Shape, want[name]):
			wrong = append(wrong, fmt.Sprintf("%s is %v, want %v", quoteName(name), t.Shape, want[name]))
		}
	}
	for _, name := range c.Names() {
		if _, ok := want[name]; ok {
			continue
		}
		t := c.Tensors[name]
		if shape, ok := optional[name]; ok {
			if !shapeEqual(t.Shape, shape) {
				wrong = append(wrong, fmt.Sprintf("%s is %v, want %v", quoteName(name), t.Shape, shape))
			}
			continue
		}
		if _, rest, ok := layerIndex(name); ok && rest == rotarySuffix {
			// The rotary buffer: head dim / 2 values (this is the one tensor
			// that tells num_attention_heads).
			if hd := cfg.HeadDim(); !shapeEqual(t.Shape, []int{hd / 2}) {
				wrong = append(wrong, fmt.Sprintf("%s is %v, want [%d] (hidden_size %d / num_attention_heads %d / 2)",
					quoteName(name), t.Shape, hd/2, D, cfg.NumAttentionHeads))
			}
			continue
		}
		if strings.HasPrefix(name, "embeddings.") || strings.HasPrefix(name, "encoder.") || strings.HasPrefix(name, "lm_head.") {
			unexpected = append(unexpected, name)
		}
	}
	var errs []error
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("%d tensors missing: %s", len(missing), nameList(missing)))
	}
	if len(wrong) > 0 {
		errs = append(errs, fmt.Errorf("%d tensors with the wrong shape: %s", len(wrong), nameList(wrong)))
	}
	if len(unexpected) > 0 {
		slices.Sort(unexpected)
		unexpected = slices.Compact(unexpected)
		errs = append(errs, fmt.Errorf("%d tensors an ESM2 model does not have: %s", len(unexpected),
			capList(len(unexpected), func(i int) string { return quoteName(unexpected[i]) })))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: tensors do not match %s: %w", c.Path, src, errors.Join(errs...))
	}
	return nil
}
