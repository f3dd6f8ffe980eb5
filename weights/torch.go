package weights

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	zpath "path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// This file reads torch.save zip archives (torch >= 1.6): <prefix>/data.pkl holds a
// pickle whose tensors point, through persistent ids, at raw storages stored
// uncompressed in <prefix>/data/<key>. gopickle decodes the pickle; storages are not
// read through it (it would convert every fp16 storage to a []float32 copy) but
// sliced out of the mapped file, so a .pt costs no more memory than a safetensors.

// torchArchive is an opened torch.save zip file.
type torchArchive struct {
	path    string
	m       *mappedFile
	entries map[string]*zip.File // by full name in the zip
	prefix  string               // "archive/" (whatever directory holds data.pkl)
}

// ptStorage is a storage referenced by the pickle ('storage', cls, key, location, numel).
type ptStorage struct {
	class string // torch class name, e.g. "HalfStorage"
	dtype DType  // "" when the class is not a supported dtype
	key   string
	numel int
}

// ptTensor is the result of torch._utils._rebuild_tensor_v2.
type ptTensor struct {
	storage *ptStorage
	offset  int
	shape   []int
	stride  []int
}

// pyObject stands for any Python object of a class this reader does not know
// (argparse.Namespace, omegaconf nodes, ...): it keeps its attributes.
type pyObject struct {
	class *pyClass
	args  []any
	attrs map[string]any
	state any
}

type pyClass struct{ module, name string }

func (c *pyClass) PyNew(args ...any) (any, error) {
	return &pyObject{class: c, args: args, attrs: map[string]any{}}, nil
}
func (c *pyClass) Call(args ...any) (any, error) { return c.PyNew(args...) }

func (o *pyObject) PyDictSet(key, value any) error {
	if k, ok := key.(string); ok {
		o.attrs[k] = value
	}
	return nil
}
func (o *pyObject) PySetAttr(key string, value any) error { o.attrs[key] = value; return nil }
func (o *pyObject) PySetState(state any) error {
	if t, ok := state.(*types.Tuple); ok && t.Len() == 2 {
		o.PySetState(t.Get(0))
		state = t.Get(1)
	}
	switch s := state.(type) {
	case *types.Dict:
		for _, e := range *s {
			o.PyDictSet(e.Key, e.Value)
		}
	case nil:
	default:
		o.state = s
	}
	return nil
}

type pyFunc func(args ...any) (any, error)

func (f pyFunc) Call(args ...any) (any, error) { return f(args...) }

var storageDTypes = map[string]DType{
	"FloatStorage": F32, "HalfStorage": F16, "BFloat16Storage": BF16,
	"IntStorage": I32, "LongStorage": I64,
}

// openTorchArchive maps a torch.save zip file and finds its data.pkl.
func openTorchArchive(path string) (*torchArchive, error) {
	m, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("open .pt: %w", err)
	}
	a := &torchArchive{path: path, m: m, entries: map[string]*zip.File{}}
	zr, err := zip.NewReader(bytes.NewReader(m.data), int64(len(m.data)))
	if err != nil {
		m.close()
		if len(m.data) >= 2 && m.data[0] == 0x80 {
			return nil, fmt.Errorf("%s: legacy (pre-zip, torch < 1.6) torch.save format is not supported; re-save it with a current torch.save", path)
		}
		return nil, fmt.Errorf("%s: not a torch.save zip archive: %w", path, err)
	}
	for _, f := range zr.File {
		a.entries[f.Name] = f
		switch zpath.Base(f.Name) {
		case "data.pkl":
			if a.prefix == "" {
				a.prefix = strings.TrimSuffix(f.Name, "data.pkl")
			}
		case "constants.pkl":
			m.close()
			return nil, fmt.Errorf("%s: TorchScript archives are not supported (use the torch.save state dict)", path)
		}
	}
	if _, ok := a.entries[a.prefix+"data.pkl"]; !ok {
		m.close()
		return nil, fmt.Errorf("%s: no data.pkl in the zip archive", path)
	}
	return a, nil
}

// load unpickles data.pkl. Malformed pickles give errors (a panic inside the
// pickle library is turned into one too).
func (a *torchArchive) load() (result any, err error) {
	f, err := a.entries[a.prefix+"data.pkl"].Open()
	if err != nil {
		return nil, fmt.Errorf("%s: data.pkl: %w", a.path, err)
	}
	defer f.Close()
	storages := map[string]*ptStorage{}
	u := pickle.NewUnpickler(io.LimitReader(f, 1<<30))
	u.FindClass = func(module, name string) (any, error) {
		switch module + "." + name {
		case "torch._utils._rebuild_tensor_v2":
			return pyFunc(rebuildTensorV2), nil
		case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
			return pyFunc(func(args ...any) (any, error) {
				if len(args) == 0 {
					return nil, errors.New("_rebuild_parameter: no arguments")
				}
				return args[0], nil
			}), nil
		}
		if module == "torch" && strings.HasSuffix(name, "Storage") {
			return &ptStorage{class: name, dtype: storageDTypes[name]}, nil
		}
		return &pyClass{module: module, name: name}, nil
	}
	u.PersistentLoad = func(pid any) (any, error) {
		t, ok := pid.(*types.Tuple)
		if !ok || t.Len() < 5 {
			return nil, fmt.Errorf("persistent id %T is not a storage tuple", pid)
		}
		kind, _ := t.Get(0).(string)
		cls, okc := t.Get(1).(*ptStorage)
		key, okk := t.Get(2).(string)
		numel, okn := t.Get(4).(int)
		if kind != "storage" || !okc || !okk || !okn || numel < 0 {
			return nil, fmt.Errorf("persistent id %v is not ('storage', class, key, location, numel)", *t)
		}
		if s, ok := storages[key]; ok {
			return s, nil
		}
		s := &ptStorage{class: cls.class, dtype: cls.dtype, key: key, numel: numel}
		storages[key] = s
		return s, nil
	}
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, fmt.Errorf("%s: malformed pickle in data.pkl: %v", a.path, r)
		}
	}()
	result, err = u.Load()
	if err != nil {
		return nil, fmt.Errorf("%s: data.pkl: %w", a.path, err)
	}
	return result, nil
}

func rebuildTensorV2(args ...any) (any, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: %d arguments, want at least 4", len(args))
	}
	s, ok := args[0].(*ptStorage)
	off, ok2 := args[1].(int)
	shape, err := intTuple(args[2])
	stride, err2 := intTuple(args[3])
	if !ok || !ok2 || err != nil || err2 != nil || len(shape) != len(stride) || off < 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: unexpected arguments (storage %T, offset %v, size %v, stride %v)", args[0], args[1], args[2], args[3])
	}
	return &ptTensor{storage: s, offset: off, shape: shape, stride: stride}, nil
}

func intTuple(v any) ([]int, error) {
	t, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%T is not a tuple", v)
	}
	out := make([]int, t.Len())
	for i := range out {
		n, ok := t.Get(i).(int)
		if !ok || n < 0 {
			return nil, fmt.Errorf("tuple element %v is not a non-negative int", t.Get(i))
		}
		out[i] = n
	}
	return out, nil
}

// storageBytes returns the bytes of a storage: a slice of the mapping when the zip
// entry is stored uncompressed (torch always does this), else a decompressed copy.
func (a *torchArchive) storageBytes(s *ptStorage) ([]byte, error) {
	name := a.prefix + "data/" + s.key
	e, ok := a.entries[name]
	if !ok {
		return nil, fmt.Errorf("%s: storage %q: zip entry %s missing", a.path, s.key, name)
	}
	need := uint64(s.numel) * uint64(s.dtype.Size())
	if e.UncompressedSize64 < need {
		return nil, fmt.Errorf("%s: storage %q: %d bytes, %d elements of %s need %d (truncated?)", a.path, s.key, e.UncompressedSize64, s.numel, s.dtype, need)
	}
	if e.Method == zip.Store {
		off, err := e.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("%s: storage %q: %w", a.path, s.key, err)
		}
		if off < 0 || uint64(off)+need > uint64(len(a.m.data)) {
			return nil, fmt.Errorf("%s: storage %q: data beyond the end of the file (truncated?)", a.path, s.key)
		}
		return a.m.data[off : uint64(off)+need : uint64(off)+need], nil
	}
	r, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: storage %q: %w", a.path, s.key, err)
	}
	defer r.Close()
	buf := make([]byte, need)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%s: storage %q: %w", a.path, s.key, err)
	}
	return buf, nil
}

// tensor materialises a pickled tensor as a Tensor named name. A contiguous tensor
// aliases the mapping; a strided one is gathered into a new buffer.
func (a *torchArchive) tensor(name string, pt *ptTensor) (*Tensor, error) {
	s := pt.storage
	if s.dtype == "" {
		return nil, fmt.Errorf("%s: tensor %q: unsupported storage type torch.%s", a.path, name, s.class)
	}
	es := s.dtype.Size()
	shape64 := make([]int64, len(pt.shape))
	for i, d := range pt.shape {
		shape64[i] = int64(d)
	}
	n, ok := checkedNumel(shape64, es)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: invalid shape %v", a.path, name, pt.shape)
	}
	t := &Tensor{Name: name, DType: s.dtype, Shape: append([]int{}, pt.shape...), file: a.path}
	if n == 0 {
		t.data = []byte{}
		return t, nil
	}
	// Highest element index touched, checked against the storage size.
	last := pt.offset
	for i, d := range pt.shape {
		if pt.stride[i] > 0 && d-1 > (s.numel-last)/pt.stride[i] {
			return nil, fmt.Errorf("%s: tensor %q: shape %v stride %v offset %d reach beyond its storage of %d elements", a.path, name, pt.shape, pt.stride, pt.offset, s.numel)
		}
		last += (d - 1) * pt.stride[i]
	}
	if last >= s.numel {
		return nil, fmt.Errorf("%s: tensor %q: shape %v stride %v offset %d reach beyond its storage of %d elements", a.path, name, pt.shape, pt.stride, pt.offset, s.numel)
	}
	sb, err := a.storageBytes(s)
	if err != nil {
		return nil, err
	}
	if isContiguous(pt.shape, pt.stride) {
		t.data = sb[pt.offset*es : (pt.offset+n)*es : (pt.offset+n)*es]
		return t, nil
	}
	out := make([]byte, 0, n*es)
	idx := make([]int, len(pt.shape))
	for k := 0; k < n; k++ {
		e := pt.offset
		for i, j := range idx {
			e += j * pt.stride[i]
		}
		out = append(out, sb[e*es:(e+1)*es]...)
		for i := len(idx) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < pt.shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	t.data = out
	return t, nil
}

func isContiguous(shape, stride []int) bool {
	want := 1
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] != 1 && stride[i] != want {
			return false
		}
		want *= shape[i]
	}
	return true
}

// --- Python value helpers ---

// pyGet looks key up in a dict, an OrderedDict or an object's attributes (also
// inside an omegaconf-style "_content" and through a node's "_val").
func pyGet(obj any, key string) (any, bool) {
	var v any
	var ok bool
	switch o := obj.(type) {
	case *types.Dict:
		v, ok = o.Get(key)
	case *types.OrderedDict:
		v, ok = o.Get(key)
	case *pyObject:
		v, ok = o.attrs[key]
		if !ok {
			if c, has := o.attrs["_content"]; has {
				v, ok = pyGet(c, key)
			}
		}
	}
	if n, isObj := v.(*pyObject); ok && isObj {
		if val, has := n.attrs["_val"]; has {
			v = val
		}
	}
	return v, ok
}

// pyItems returns the (string key, value) pairs of a dict or OrderedDict in order.
func pyItems(obj any) ([]string, []any, bool) {
	var keys []string
	var vals []any
	switch o := obj.(type) {
	case *types.Dict:
		for _, e := range *o {
			if k, ok := e.Key.(string); ok {
				keys, vals = append(keys, k), append(vals, e.Value)
			}
		}
	case *types.OrderedDict:
		for el := o.List.Front(); el != nil; el = el.Next() {
			e := el.Value.(*types.OrderedDictEntry)
			if k, ok := e.Key.(string); ok {
				keys, vals = append(keys, k), append(vals, e.Value)
			}
		}
	default:
		return nil, nil, false
	}
	return keys, vals, true
}

func pyInt(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case *big.Int:
		if x.IsInt64() {
			return int(x.Int64()), true
		}
	}
	return 0, false
}

// --- fair-esm ---

var fairLayerRe = regexp.MustCompile(`^layers\.(\d+)\.(.+)$`)

var fairLayerParts = map[string]string{
	"self_attn.q_proj.":     "attention.self.query.",
	"self_attn.k_proj.":     "attention.self.key.",
	"self_attn.v_proj.":     "attention.self.value.",
	"self_attn.out_proj.":   "attention.output.dense.",
	"self_attn.rot_emb.":    "attention.self.rotary_embeddings.",
	"self_attn_layer_norm.": "attention.LayerNorm.",
	"fc1.":                  "intermediate.dense.",
	"fc2.":                  "output.dense.",
	"final_layer_norm.":     "LayerNorm.",
}

// fairESMCanonicalName maps a fair-esm ESM2 state-dict name to the canonical name
// (after fair-esm's own upgrade_state_dict, which strips "encoder.sentence_encoder."
// or "encoder."). ok is false for names the model never needs.
func fairESMCanonicalName(raw string) (name string, ok bool) {
	n := raw
	for _, p := range []string{"encoder.sentence_encoder.", "encoder."} {
		if strings.HasPrefix(n, p) {
			n = n[len(p):]
			break
		}
	}
	switch {
	case n == "embed_tokens.weight":
		return "embeddings.word_embeddings.weight", true
	case strings.HasPrefix(n, "emb_layer_norm_after."):
		return "encoder." + n, true
	case n == "lm_head.weight":
		return "lm_head.decoder.weight", true
	case n == "lm_head.bias", strings.HasPrefix(n, "lm_head.dense."), strings.HasPrefix(n, "lm_head.layer_norm."),
		strings.HasPrefix(n, "contact_head.regression."):
		return n, true
	}
	if m := fairLayerRe.FindStringSubmatch(n); m != nil {
		for from, to := range fairLayerParts {
			if rest, found := strings.CutPrefix(m[2], from); found {
				return "encoder.layer." + m[1] + "." + to + rest, true
			}
		}
	}
	return "", false
}

// esm2Heads is the attention head count of the released ESM2 sizes, by (layers, dim).
var esm2Heads = map[[2]int]int{
	{6, 320}: 20, {12, 480}: 20, {30, 640}: 20, {33, 1280}: 20, {36, 2560}: 40, {48, 5120}: 40,
}

// fairESMConfig synthesises the HF-style Config of a fair-esm ESM2 checkpoint from
// its cfg (an argparse.Namespace, a dict, or nil when unreadable) and its tensors.
func fairESMConfig(path string, cfg any, tensors map[string]*Tensor) (Config, error) {
	emb, ok := tensors["embeddings.word_embeddings.weight"]
	if !ok || len(emb.Shape) != 2 {
		return Config{}, fmt.Errorf("%s: no 2-D embed_tokens.weight; not an ESM2 checkpoint", path)
	}
	vocab, dim := emb.Shape[0], emb.Shape[1]
	layers := 0
	for name := range tensors {
		if rest, ok := strings.CutPrefix(name, "encoder.layer."); ok {
			i, err := strconv.Atoi(rest[:strings.IndexByte(rest, '.')])
			if err == nil && i+1 > layers {
				layers = i + 1
			}
		}
	}
	get := func(key string) (int, bool) {
		if cfg == nil {
			return 0, false
		}
		v, ok := pyGet(cfg, key)
		if !ok {
			return 0, false
		}
		return pyInt(v)
	}
	if n, ok := get("encoder_layers"); ok && n != layers {
		return Config{}, fmt.Errorf("%s: cfg says encoder_layers=%d but the state dict has %d layers", path, n, layers)
	}
	if n, ok := get("encoder_embed_dim"); ok && n != dim {
		return Config{}, fmt.Errorf("%s: cfg says encoder_embed_dim=%d but embed_tokens has dim %d", path, n, dim)
	}
	heads, ok := get("encoder_attention_heads")
	if !ok {
		if heads, ok = esm2Heads[[2]int{layers, dim}]; !ok {
			return Config{}, fmt.Errorf("%s: cfg has no encoder_attention_heads and %d layers × dim %d is not a known ESM2 size", path, layers, dim)
		}
	}
	ffn := 4 * dim
	if t, ok := tensors["encoder.layer.0.intermediate.dense.weight"]; ok && len(t.Shape) == 2 {
		ffn = t.Shape[0]
	}
	tokenDropout := true
	if cfg != nil {
		if v, ok := pyGet(cfg, "token_dropout"); ok {
			if b, isBool := v.(bool); isBool {
				tokenDropout = b
			}
		}
	}
	dtype := map[DType]string{F32: "float32", F16: "float16", BF16: "bfloat16"}[emb.DType]
	c := Config{
		ModelType: "esm", Architectures: []string{"EsmForMaskedLM"},
		NumHiddenLayers: layers, HiddenSize: dim, NumAttentionHeads: heads, IntermediateSize: ffn,
		VocabSize: vocab, MaxPositionEmbeddings: 1026, LayerNormEps: 1e-5, TokenDropout: tokenDropout,
		PositionEmbeddingType: "rotary", MaskTokenID: 32, PadTokenID: 1, TorchDtype: dtype,
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// openFairESM opens a fair-esm .pt checkpoint ({"model": state dict, "cfg": {"model":
// Namespace}}), plus <name>-contact-regression.pt beside it when present.
func openFairESM(path string) (ckpt *Checkpoint, err error) {
	c := &Checkpoint{Path: path, Format: FormatFairESM, Tensors: map[string]*Tensor{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	cfg, err := c.addFairESMFile(path, true)
	if err != nil {
		return nil, err
	}
	reg := strings.TrimSuffix(path, ".pt") + "-contact-regression.pt"
	if reg != path && fileExists(reg) {
		if _, err := c.addFairESMFile(reg, false); err != nil {
			return nil, err
		}
	}
	c.Config, err = fairESMConfig(path, cfg, c.Tensors)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// addFairESMFile loads one fair-esm .pt file's "model" state dict into c and
// returns its model cfg (nil when absent or unreadable).
func (c *Checkpoint) addFairESMFile(path string, main bool) (any, error) {
	a, err := openTorchArchive(path)
	if err != nil {
		return nil, err
	}
	c.files = append(c.files, a.m)
	top, err := a.load()
	if err != nil {
		return nil, err
	}
	sd, ok := pyGet(top, "model")
	if !ok {
		return nil, fmt.Errorf("%s: no \"model\" state dict at the top level; not a fair-esm checkpoint", path)
	}
	keys, vals, ok := pyItems(sd)
	if !ok {
		return nil, fmt.Errorf("%s: \"model\" is a %T, not a state dict", path, sd)
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return keys[order[i]] < keys[order[j]] })
	for _, i := range order {
		raw := keys[i]
		if strings.Contains(raw, "embed_positions") || strings.Contains(raw, "emb_layer_norm_before") {
			return nil, fmt.Errorf("%s: tensor %q: this is an ESM-1 checkpoint (learned positions); only ESM2 is supported", path, raw)
		}
		name, keep := fairESMCanonicalName(raw)
		if !keep {
			continue
		}
		pt, ok := vals[i].(*ptTensor)
		if !ok {
			return nil, fmt.Errorf("%s: state dict entry %q is a %T, not a tensor", path, raw, vals[i])
		}
		t, err := a.tensor(raw, pt)
		if err != nil {
			return nil, err
		}
		if err := c.addTensor(name, t); err != nil {
			return nil, err
		}
	}
	if !main {
		return nil, nil
	}
	var cfg any
	if cf, ok := pyGet(top, "cfg"); ok {
		cfg, _ = pyGet(cf, "model")
	} else if args, ok := pyGet(top, "args"); ok {
		cfg = args
	}
	return cfg, nil
}
