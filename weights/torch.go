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
//
// Every .pt is treated as untrusted. Before anything is allocated from a size the
// file states, the size is checked against what the file really holds: the zip
// directory (torch_zip.go), data.pkl (read whole under ptMaxPickleBytes, then
// validated opcode by opcode by ptScanPickle in torch_pickle.go before gopickle
// sees it), each storage against its zip entry, each tensor view against its
// storage. Pickled globals are resolved to inert values from a short allow-list;
// nothing from the file is ever executed.

// Limits on what a pickled tensor may claim.
const (
	// ptMaxDims caps a tensor's dimensions (ESM2 tensors have 1 or 2).
	ptMaxDims = 32
	// ptMaxNameBytes caps a kept state-dict name (ESM2's longest is ~70 bytes).
	ptMaxNameBytes = 1024
	// ptMaxSmallEntry caps the small text entries read besides data.pkl (byteorder).
	ptMaxSmallEntry = 64
)

// torchArchive is an opened torch.save zip file.
type torchArchive struct {
	path    string
	m       *mappedFile
	entries map[string]*zip.File // by full name in the zip
	prefix  string               // "archive/" (whatever directory holds data.pkl)
	copied  int                  // bytes gathered into new buffers for strided views
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

// pyObject is an argparse.Namespace (the only class a checkpoint may
// instantiate): it keeps its attributes.
type pyObject struct {
	class *pyClass
	args  []any
	attrs map[string]any
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

// PySetState applies a BUILD state: a dict of attributes, or (dict, slot dict).
// It does not recurse into the values.
func (o *pyObject) PySetState(state any) error {
	var slots any
	if t, ok := state.(*types.Tuple); ok && t.Len() == 2 {
		state, slots = t.Get(0), t.Get(1)
	}
	for _, s := range []any{state, slots} {
		switch d := s.(type) {
		case *types.Dict:
			for _, e := range *d {
				o.PyDictSet(e.Key, e.Value)
			}
		case nil:
		default:
			return fmt.Errorf("%s.%s state is a %T, not a dict", o.class.module, o.class.name, s)
		}
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
func openTorchArchive(path string) (a *torchArchive, err error) {
	m, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("open .pt: %w", err)
	}
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	data := m.data
	if len(data) == 0 || ptIsLegacy(data) {
		return nil, fmt.Errorf("%s: not a torch.save zip archive: %s", path, ptSniff(data))
	}
	found, err := ptCheckZipEnd(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !found {
		return nil, fmt.Errorf("%s: not a torch.save zip archive: %s", path, ptSniff(data))
	}
	g := &ptGuardedReaderAt{data: data, armed: true}
	zr, err := zip.NewReader(g, int64(len(data)))
	g.armed = false
	if err != nil {
		if errors.Is(err, errPtZipDirTooBig) {
			return nil, fmt.Errorf("%s: the zip directory is larger than %d MiB; a torch.save checkpoint's is a few KB", path, ptMaxZipDirBytes>>20)
		}
		return nil, fmt.Errorf("%s: not a valid torch.save zip archive (%s): %w", path, ptSniff(data), err)
	}
	if len(zr.File) > ptMaxZipEntries {
		return nil, fmt.Errorf("%s: %d zip entries, more than the %d a torch.save checkpoint can have", path, len(zr.File), ptMaxZipEntries)
	}
	a = &torchArchive{path: path, m: m, entries: make(map[string]*zip.File, len(zr.File))}
	for _, f := range zr.File {
		if _, dup := a.entries[f.Name]; dup {
			return nil, fmt.Errorf("%s: zip entry %s appears twice", path, ptQuoteRaw(f.Name))
		}
		a.entries[f.Name] = f
		switch zpath.Base(f.Name) {
		case "data.pkl":
			if a.prefix == "" && strings.Count(f.Name, "/") <= 1 {
				a.prefix = strings.TrimSuffix(f.Name, "data.pkl")
			}
		case "constants.pkl":
			return nil, fmt.Errorf("%s: TorchScript archives are not supported (use the torch.save state dict)", path)
		}
	}
	if _, ok := a.entries[a.prefix+"data.pkl"]; !ok {
		return nil, fmt.Errorf("%s: no data.pkl in the zip archive; not a torch.save checkpoint", path)
	}
	// torch >= 2.1 records the byte order of the storages.
	if e, ok := a.entries[a.prefix+"byteorder"]; ok {
		b, err := a.readEntry(e, ptMaxSmallEntry)
		if err != nil {
			return nil, err
		}
		if bo := strings.TrimSpace(string(b)); bo != "little" {
			return nil, fmt.Errorf("%s: byteorder %s: only little-endian checkpoints are supported", path, ptQuoteRaw(bo))
		}
	}
	return a, nil
}

// readEntry reads a (possibly compressed) zip entry of at most limit bytes
// into memory. The size the directory states is checked against the limit
// and against what the entry's compressed bytes can expand to before the
// buffer is allocated; reading to the end checks that the size was true.
func (a *torchArchive) readEntry(e *zip.File, limit uint64) ([]byte, error) {
	name := ptQuoteRaw(e.Name)
	size := e.UncompressedSize64
	if size > limit {
		return nil, fmt.Errorf("%s: %s is %d bytes, more than the %d a torch.save checkpoint's can be", a.path, name, size, limit)
	}
	switch e.Method {
	case zip.Store:
		if e.CompressedSize64 != size {
			return nil, fmt.Errorf("%s: %s: stored entry with %d compressed but %d uncompressed bytes (corrupt zip)", a.path, name, e.CompressedSize64, size)
		}
	case zip.Deflate:
		const maxRatio = 1032 // deflate cannot expand one byte into more
		if size > 64 && (size-64)/maxRatio > e.CompressedSize64 {
			return nil, fmt.Errorf("%s: %s claims %d bytes from %d compressed ones, more than deflate can produce (corrupt zip)", a.path, name, size, e.CompressedSize64)
		}
	default:
		return nil, fmt.Errorf("%s: %s is compressed with zip method %d; torch.save uses none (or deflate)", a.path, name, e.Method)
	}
	r, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", a.path, name, err)
	}
	defer r.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%s: %s: %w (truncated or corrupt)", a.path, name, err)
	}
	// The entry must end here: one more read returns EOF, after archive/zip
	// has checked the CRC, or an error if there is more data than stated.
	if extra, err := io.ReadAll(io.LimitReader(r, 1)); err != nil || len(extra) != 0 {
		if err == nil {
			err = zip.ErrFormat
		}
		return nil, fmt.Errorf("%s: %s: data does not match its stated size of %d bytes or its checksum (corrupt zip): %w", a.path, name, size, err)
	}
	return buf, nil
}

// load validates and unpickles data.pkl.
func (a *torchArchive) load() (result any, err error) {
	data, err := a.readEntry(a.entries[a.prefix+"data.pkl"], ptMaxPickleBytes)
	if err != nil {
		return nil, err
	}
	if _, err := ptScanPickle(data); err != nil {
		return nil, fmt.Errorf("%s: data.pkl: %w", a.path, err)
	}
	defer func() {
		// ptScanPickle rules out every panic known in gopickle; this is a
		// last line of defence, never the way an error is reported.
		if r := recover(); r != nil {
			result, err = nil, fmt.Errorf("%s: data.pkl: internal error decoding it: %s", a.path, ptQuoteRaw(fmt.Sprint(r)))
		}
	}()
	result, err = ptDecode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: data.pkl: %w", a.path, err)
	}
	return result, nil
}

// ptDecode unpickles data, which ptScanPickle must have accepted, resolving
// the allowed globals to inert values and persistent ids to ptStorages.
func ptDecode(data []byte) (any, error) {
	storages := map[string]*ptStorage{}
	u := pickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = func(module, name string) (any, error) {
		switch ptAllowedGlobal(module, name) {
		case pgRebuildTensor:
			return pyFunc(rebuildTensorV2), nil
		case pgRebuildParam:
			return pyFunc(rebuildParameter), nil
		case pgStorageClass:
			return &ptStorage{class: name, dtype: storageDTypes[name]}, nil
		case pgNamespace:
			return &pyClass{module: module, name: name}, nil
		}
		// collections.OrderedDict is resolved inside gopickle.
		return nil, fmt.Errorf("global %s not allowed", ptGlobalName(module, name))
	}
	u.PersistentLoad = func(pid any) (any, error) { return persistentStorage(storages, pid) }
	return u.Load()
}

// ptStorageKey matches the storage keys torch.save writes ("0", "1", ...),
// with room for other simple names; they become zip entry names.
var ptStorageKey = regexp.MustCompile(`^[0-9A-Za-z_.-]{1,64}$`)

// persistentStorage resolves a persistent id ('storage', class, key,
// location, numel). The same key must always name the same storage.
func persistentStorage(storages map[string]*ptStorage, pid any) (any, error) {
	t, ok := pid.(*types.Tuple)
	if !ok || t.Len() != 5 {
		return nil, fmt.Errorf("persistent id %s is not ('storage', class, key, location, numel)", ptDescribe(pid))
	}
	kind, _ := t.Get(0).(string)
	cls, okc := t.Get(1).(*ptStorage)
	key, okk := t.Get(2).(string)
	_, okl := t.Get(3).(string)
	numel, okn := t.Get(4).(int)
	if kind != "storage" || !okc || !okk || !okl || !okn {
		return nil, fmt.Errorf("persistent id %s is not ('storage', class, key, location, numel)", ptDescribe(pid))
	}
	if !ptStorageKey.MatchString(key) {
		return nil, fmt.Errorf("storage key %s is not a simple name", ptQuoteRaw(key))
	}
	if numel < 0 {
		return nil, fmt.Errorf("storage %q: negative size %d", key, numel)
	}
	if s, ok := storages[key]; ok {
		if s.class != cls.class || s.numel != numel {
			return nil, fmt.Errorf("storage %q is %d elements of torch.%s here but %d of torch.%s before", key, numel, cls.class, s.numel, s.class)
		}
		return s, nil
	}
	s := &ptStorage{class: cls.class, dtype: cls.dtype, key: key, numel: numel}
	storages[key] = s
	return s, nil
}

// rebuildTensorV2 is torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, backward_hooks[, metadata]).
func rebuildTensorV2(args ...any) (any, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: %d arguments, want at least 4", len(args))
	}
	s, ok := args[0].(*ptStorage)
	off, ok2 := args[1].(int)
	if !ok || !ok2 || off < 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: storage %s, offset %s: want a storage and a non-negative int", ptDescribe(args[0]), ptDescribe(args[1]))
	}
	shape, err := intTuple(args[2])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor_v2: size: %w", err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor_v2: stride: %w", err)
	}
	if len(shape) != len(stride) {
		return nil, fmt.Errorf("_rebuild_tensor_v2: size %v and stride %v differ in length", shape, stride)
	}
	return &ptTensor{storage: s, offset: off, shape: shape, stride: stride}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks) and _rebuild_parameter_with_state(..., state): the tensor.
func rebuildParameter(args ...any) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("_rebuild_parameter: no arguments")
	}
	t, ok := args[0].(*ptTensor)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter: data is %s, not a tensor", ptDescribe(args[0]))
	}
	return t, nil
}

// intTuple reads a tuple of at most ptMaxDims non-negative ints.
func intTuple(v any) ([]int, error) {
	t, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%s is not a tuple", ptDescribe(v))
	}
	if t.Len() > ptMaxDims {
		return nil, fmt.Errorf("%d dimensions, more than %d", t.Len(), ptMaxDims)
	}
	out := make([]int, t.Len())
	for i := range out {
		n, ok := t.Get(i).(int)
		if !ok || n < 0 {
			return nil, fmt.Errorf("element %d is %s, not a non-negative int", i, ptDescribe(t.Get(i)))
		}
		out[i] = n
	}
	return out, nil
}

// storageBytes returns the bytes of a storage, a slice of the mapping. The
// zip entry must be stored uncompressed (torch.save always does this: the
// storage is used in place, and a compressed one could expand without bound)
// and hold numel elements.
func (a *torchArchive) storageBytes(s *ptStorage) ([]byte, error) {
	name := a.prefix + "data/" + s.key
	e, ok := a.entries[name]
	if !ok {
		return nil, fmt.Errorf("%s: storage %q: zip entry %s missing", a.path, s.key, name)
	}
	if e.Method != zip.Store {
		return nil, fmt.Errorf("%s: storage %q: zip entry is compressed (method %d); torch.save stores storages uncompressed, re-save the checkpoint with torch.save", a.path, s.key, e.Method)
	}
	if e.CompressedSize64 != e.UncompressedSize64 {
		return nil, fmt.Errorf("%s: storage %q: stored entry with %d compressed but %d uncompressed bytes (corrupt zip)", a.path, s.key, e.CompressedSize64, e.UncompressedSize64)
	}
	size := e.UncompressedSize64
	es := uint64(s.dtype.Size())
	if es == 0 || uint64(s.numel) > size/es {
		return nil, fmt.Errorf("%s: storage %q: %d elements of %s need more than its %d bytes (truncated?)", a.path, s.key, s.numel, s.dtype, size)
	}
	need := uint64(s.numel) * es
	off, err := e.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("%s: storage %q: %w", a.path, s.key, err)
	}
	if off < 0 || uint64(off) > uint64(len(a.m.data)) || size > uint64(len(a.m.data))-uint64(off) {
		return nil, fmt.Errorf("%s: storage %q: data beyond the end of the file (truncated?)", a.path, s.key)
	}
	return a.m.data[off : uint64(off)+need : uint64(off)+need], nil
}

// tensor materialises a pickled tensor as a Tensor named name. A contiguous tensor
// aliases the mapping; a strided one is gathered into a new buffer (at most as
// many bytes in all as the file holds).
func (a *torchArchive) tensor(name string, pt *ptTensor) (*Tensor, error) {
	s := pt.storage
	qn := ptQuoteRaw(name)
	if s.dtype == "" {
		return nil, fmt.Errorf("%s: tensor %s: unsupported storage type torch.%s", a.path, qn, s.class)
	}
	es := s.dtype.Size()
	shape64 := make([]int64, len(pt.shape))
	for i, d := range pt.shape {
		shape64[i] = int64(d)
	}
	n, ok := checkedNumel(shape64, es)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %s: shape %v: too many elements", a.path, qn, pt.shape)
	}
	t := &Tensor{Name: name, DType: s.dtype, Shape: append([]int{}, pt.shape...), file: a.path}
	if n == 0 {
		t.data = []byte{}
		return t, nil
	}
	// last = offset + Σ (shape[i]-1)·stride[i], the highest element touched;
	// every partial sum is kept below numel, so nothing overflows.
	beyond := func() error {
		return fmt.Errorf("%s: tensor %s: shape %v stride %v offset %d reach beyond its storage of %d elements", a.path, qn, pt.shape, pt.stride, pt.offset, s.numel)
	}
	last := pt.offset
	if last >= s.numel {
		return nil, beyond()
	}
	for i, d := range pt.shape {
		if st := pt.stride[i]; st > 0 {
			if d-1 > (s.numel-1-last)/st {
				return nil, beyond()
			}
			last += (d - 1) * st
		}
	}
	sb, err := a.storageBytes(s)
	if err != nil {
		return nil, err
	}
	if isContiguous(pt.shape, pt.stride) {
		t.data = sb[pt.offset*es : (pt.offset+n)*es : (pt.offset+n)*es]
		return t, nil
	}
	if n*es > len(a.m.data)-a.copied {
		return nil, fmt.Errorf("%s: tensor %s: strided views would copy more bytes than the file holds", a.path, qn)
	}
	a.copied += n * es
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

// pyGet looks key up in a dict, an OrderedDict or a Namespace's attributes.
func pyGet(obj any, key string) (any, bool) {
	switch o := obj.(type) {
	case *types.Dict:
		return o.Get(key)
	case *types.OrderedDict:
		return o.Get(key)
	case *pyObject:
		v, ok := o.attrs[key]
		return v, ok
	}
	return nil, false
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

// ptDescribe describes a decoded value for an error message, in at most
// ~100 bytes: scalars by value (strings cut), containers by type and length.
func ptDescribe(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		return ptQuoteRaw(x)
	case int, bool, float64:
		return fmt.Sprint(x)
	case *big.Int:
		s := x.String()
		if len(s) > 40 {
			return fmt.Sprintf("an integer of %d digits", len(s))
		}
		return s
	case *types.Tuple:
		parts := make([]string, 0, 6)
		for i := 0; i < x.Len() && i < 5; i++ {
			switch e := x.Get(i).(type) {
			case string:
				parts = append(parts, ptQuoteRaw(e[:min(len(e), 20)]))
			case int, bool, nil:
				parts = append(parts, fmt.Sprint(e))
			default:
				parts = append(parts, fmt.Sprintf("%T", e))
			}
		}
		if x.Len() > 5 {
			parts = append(parts, fmt.Sprintf("... and %d more", x.Len()-5))
		}
		return "(" + strings.Join(parts, ", ") + ")"
	case *types.List:
		return fmt.Sprintf("a list of %d", x.Len())
	case *types.Dict:
		return fmt.Sprintf("a dict of %d", x.Len())
	case *types.OrderedDict:
		return fmt.Sprintf("an OrderedDict of %d", x.Len())
	case *ptStorage:
		return "a storage"
	case *ptTensor:
		return "a tensor"
	}
	return fmt.Sprintf("a %T", v)
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
		return nil, fmt.Errorf("%s: \"model\" is %s, not a state dict", path, ptDescribe(sd))
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return keys[order[i]] < keys[order[j]] })
	for _, i := range order {
		raw := keys[i]
		if strings.Contains(raw, "embed_positions") || strings.Contains(raw, "emb_layer_norm_before") {
			return nil, fmt.Errorf("%s: tensor %s: this is an ESM-1 checkpoint (learned positions); only ESM2 is supported", path, ptQuoteRaw(raw))
		}
		name, keep := fairESMCanonicalName(raw)
		if !keep {
			continue
		}
		if len(raw) > ptMaxNameBytes {
			return nil, fmt.Errorf("%s: state dict name of %d bytes (%s); ESM2 names are under 100", path, len(raw), ptQuoteRaw(raw))
		}
		pt, ok := vals[i].(*ptTensor)
		if !ok {
			return nil, fmt.Errorf("%s: state dict entry %s is %s, not a tensor", path, ptQuoteRaw(raw), ptDescribe(vals[i]))
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
