package weights

import (
	"encoding/binary"
	"errors"
	"sort"
	"strings"
	"testing"
	"unsafe"
)

// stHeader builds a safetensors file from a raw header and data bytes.
func stHeader(h string, data []byte) []byte {
	b := make([]byte, 8, 8+len(h)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(h)))
	return append(append(b, h...), data...)
}

// FuzzSafetensors runs the safetensors parser over arbitrary bytes. A file it
// accepts must hold tensors that alias the data section, tile it exactly (no
// overlap, no gap, nothing after), and convert without panicking: to float32
// or a NonFiniteError for float dtypes, to int32 or a range error for ints.
func FuzzSafetensors(f *testing.F) {
	// Real names and shapes: layer 0's attention of the tiny model (the whole
	// model, ~20 KB, makes the engine spend its time minimizing).
	var real []stSpec
	for _, s := range tinySpecs() {
		if strings.Contains(s.name, "layer.0.attention.self.") || strings.Contains(s.name, "position_ids") {
			real = append(real, s)
		}
	}
	f.Add(buildSafetensors(real, map[string]string{"format": "pt"}))
	f.Add(buildSafetensors([]stSpec{
		{"w", F32, []int{2, 2}, f32Bytes(1, 2, 3, 4)},
		{"h", F16, []int{3}, u16Bytes(1, 2, 0x7c00)},
		{"b", BF16, []int{1}, u16Bytes(0x3f80)},
		{"e", F32, []int{0, 7}, nil},
		{"i", I64, []int{1}, make([]byte, 8)},
	}, map[string]string{"version": "1"}))
	f.Add(buildSafetensors(nil, nil))
	f.Add(stHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)))
	f.Add(stHeader(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(stHeader(`{"a":{"dtype":"I64","shape":[1152921504606846976,2],"data_offsets":[0,16]}}`, make([]byte, 16)))
	f.Add(stHeader(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(stHeader(`{"__metadata__":{"k":"v"},"x":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}} `, []byte{0x80, 0x7f}))
	f.Fuzz(func(t *testing.T, buf []byte) {
		sf, err := parseSafetensors("fuzz.safetensors", buf)
		if err != nil {
			if len(err.Error()) > 4000 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		hlen := binary.LittleEndian.Uint64(buf)
		dataStart := uintptr(unsafe.Pointer(&buf[0])) + 8 + uintptr(hlen)
		dataLen := uint64(len(buf)) - 8 - hlen
		type span struct{ lo, hi uint64 }
		var spans []span
		for name, tn := range sf.Tensors {
			if tn.Name != name || len(tn.Bytes()) != tn.NumElements()*tn.DType.Size() {
				t.Fatalf("tensor %q: %d bytes for shape %v of %s", name, len(tn.Bytes()), tn.Shape, tn.DType)
			}
			if len(tn.Bytes()) > 0 {
				lo := uint64(uintptr(unsafe.Pointer(&tn.Bytes()[0])) - dataStart)
				spans = append(spans, span{lo, lo + uint64(len(tn.Bytes()))})
			}
			switch tn.DType {
			case I32, I64:
				tn.Int32() // may fail (I64 out of range), must not panic
			default:
				v, err := tn.Float32()
				var nf *NonFiniteError
				switch {
				case err == nil && len(v) != tn.NumElements():
					t.Fatalf("tensor %q: %d values for %d elements", name, len(v), tn.NumElements())
				case err != nil && !errors.As(err, &nf):
					t.Fatalf("tensor %q: %v", name, err)
				case err != nil && (nf.Index < 0 || nf.Index >= tn.NumElements()):
					t.Fatalf("tensor %q: bad element index %d of %d", name, nf.Index, tn.NumElements())
				}
			}
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
		var pos uint64
		for _, s := range spans {
			if s.lo != pos {
				t.Fatalf("tensor bytes start at %d, want %d (overlap or gap)", s.lo, pos)
			}
			pos = s.hi
		}
		if pos != dataLen {
			t.Fatalf("tensors cover %d of %d data bytes", pos, dataLen)
		}
	})
}

// FuzzConfig sends config.json bytes through the public path: ParseConfig,
// Validate, then the check against the tensors of the tiny model. A config
// that passes Validate stays within the documented limits; one that passes
// the tensor check describes exactly the tiny model.
func FuzzConfig(f *testing.F) {
	f.Add(tinyConfigJSON(nil))
	for _, mod := range []func(map[string]any){
		func(c map[string]any) { c["hidden_size"] = 1_000_000_000 },
		func(c map[string]any) { c["num_hidden_layers"] = 10_000_000 },
		func(c map[string]any) { c["num_hidden_layers"] = 3 },
		func(c map[string]any) { c["num_attention_heads"] = 3 },
		func(c map[string]any) { c["num_attention_heads"] = 4 },
		func(c map[string]any) { c["intermediate_size"] = 1 << 40 },
		func(c map[string]any) { c["intermediate_size"] = 64 },
		func(c map[string]any) { c["vocab_size"] = 1 << 31 },
		func(c map[string]any) { c["hidden_size"] = -8 },
		func(c map[string]any) { c["max_position_embeddings"] = -1 },
		func(c map[string]any) { c["layer_norm_eps"] = 0 },
		func(c map[string]any) { c["hidden_size"] = 16; c["intermediate_size"] = 64 },
		func(c map[string]any) { delete(c, "model_type") },
	} {
		f.Add(tinyConfigJSON(mod))
	}
	f.Add([]byte(`{"hidden_size": 1e9}`))
	f.Add([]byte(`{"model_type":"esm","num_hidden_layers":2,"num_hidden_layers":2}`))
	f.Add([]byte(`[]`))
	ck := tinyCheckpoint(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		if cfg.NumHiddenLayers < 1 || cfg.NumHiddenLayers > maxLayers || cfg.HiddenSize < 1 || cfg.HiddenSize > maxHiddenSize ||
			cfg.IntermediateSize < 1 || cfg.IntermediateSize > maxIntermediateSize || cfg.VocabSize != esmVocabSize ||
			cfg.NumAttentionHeads < 1 || cfg.HiddenSize%cfg.NumAttentionHeads != 0 || cfg.HeadDim()%2 != 0 ||
			!(cfg.LayerNormEps > 0 && cfg.LayerNormEps <= 1) {
			t.Fatalf("Validate accepted %+v", cfg)
		}
		c := *ck
		c.Config = cfg
		if err := c.checkTensors(); err != nil {
			if len(err.Error()) > 8000 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if cfg.NumHiddenLayers != tinyL || cfg.HiddenSize != tinyD || cfg.IntermediateSize != tinyF || cfg.HeadDim() != tinyD/tinyH {
			t.Fatalf("tensor check accepted %+v for the tiny model", cfg)
		}
	})
}
