package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
)

// maxHeaderLen bounds the JSON header of a safetensors file (the format's own limit).
const maxHeaderLen = 100 << 20

// SafetensorsFile is one opened .safetensors file. Its tensors alias the mapping and
// stay valid until Close.
type SafetensorsFile struct {
	Path     string
	Metadata map[string]string  // the "__metadata__" entry, empty when absent
	Tensors  map[string]*Tensor // by the raw names in the file

	m *mappedFile
}

// OpenSafetensors maps a .safetensors file read-only and validates its header
// strictly: every problem is an error naming the file (and tensor), never a panic.
// Dtypes F32, F16, BF16, I32 and I64 are accepted.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	m, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("open safetensors: %w", err)
	}
	f, err := parseSafetensors(path, m.data)
	if err != nil {
		m.close()
		return nil, err
	}
	f.m = m
	return f, nil
}

// Close unmaps the file.
func (f *SafetensorsFile) Close() error {
	if f == nil {
		return nil
	}
	err := f.m.close()
	f.m = nil
	return err
}

// Names returns the tensor names in sorted order.
func (f *SafetensorsFile) Names() []string {
	names := make([]string, 0, len(f.Tensors))
	for n := range f.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

type stEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// parseSafetensors validates buf (the whole file) and returns views into it.
func parseSafetensors(path string, buf []byte) (*SafetensorsFile, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("%s: not a safetensors file: %d bytes, need at least 8", path, len(buf))
	}
	hlen := binary.LittleEndian.Uint64(buf[:8])
	if hlen >= maxHeaderLen {
		return nil, fmt.Errorf("%s: safetensors header length %d exceeds the %d byte limit", path, hlen, maxHeaderLen)
	}
	if hlen > uint64(len(buf)-8) {
		return nil, fmt.Errorf("%s: safetensors header length %d but the file has only %d bytes after it (truncated?)", path, hlen, len(buf)-8)
	}
	header := buf[8 : 8+hlen]
	data := buf[8+hlen:]
	if len(bytes.TrimSpace(header)) == 0 || bytes.TrimSpace(header)[0] != '{' {
		return nil, fmt.Errorf("%s: safetensors header is not a JSON object", path)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fmt.Errorf("%s: safetensors header: %w", path, err)
	}
	f := &SafetensorsFile{Path: path, Metadata: map[string]string{}, Tensors: make(map[string]*Tensor, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("%s: safetensors __metadata__ must map strings to strings: %w", path, err)
			}
			continue
		}
		var e stEntry
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: bad header entry: %w", path, name, err)
		}
		t, err := stTensor(path, name, e, data)
		if err != nil {
			return nil, err
		}
		f.Tensors[name] = t
	}
	return f, nil
}

func stTensor(path, name string, e stEntry, data []byte) (*Tensor, error) {
	dt := DType(e.DType)
	size := dt.Size()
	if size == 0 {
		return nil, fmt.Errorf("%s: tensor %q: unsupported dtype %q (want F32, F16, BF16, I32 or I64)", path, name, e.DType)
	}
	if e.Shape == nil {
		return nil, fmt.Errorf("%s: tensor %q: missing shape", path, name)
	}
	numel, ok := checkedNumel(e.Shape, size)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: invalid shape %v (negative or overflowing)", path, name, e.Shape)
	}
	if len(e.DataOffsets) != 2 {
		return nil, fmt.Errorf("%s: tensor %q: data_offsets must have 2 entries, got %d", path, name, len(e.DataOffsets))
	}
	begin, end := e.DataOffsets[0], e.DataOffsets[1]
	if begin < 0 || end < begin || end > int64(len(data)) {
		return nil, fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] outside the %d byte data section (truncated file?)", path, name, begin, end, len(data))
	}
	if end-begin != int64(numel)*int64(size) {
		return nil, fmt.Errorf("%s: tensor %q: data_offsets span %d bytes, shape %v of %s needs %d", path, name, end-begin, e.Shape, dt, int64(numel)*int64(size))
	}
	shape := make([]int, len(e.Shape))
	for i, d := range e.Shape {
		shape[i] = int(d)
	}
	return &Tensor{Name: name, DType: dt, Shape: shape, data: data[begin:end:end], file: path}, nil
}
