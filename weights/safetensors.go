package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// Limits of a safetensors header.
const (
	// maxHeaderLen is the reference loader's MAX_HEADER_SIZE (100 MB, decimal).
	maxHeaderLen = 100_000_000
	// maxTensors bounds the entries of one file, which the format does not:
	// a 100 MB header of 1.7 million empty tensors takes minutes to parse and
	// about 1 GB of memory. ESM2 15B has about 800 tensors in all, the
	// parity fixtures about 500.
	maxTensors = 1 << 14
)

// SafetensorsFile is one opened .safetensors file. Its tensors alias the mapping and
// stay valid until Close.
type SafetensorsFile struct {
	Path     string
	Metadata map[string]string  // the "__metadata__" entry, empty when absent
	Tensors  map[string]*Tensor // by the raw names in the file

	m *mappedFile
}

// OpenSafetensors maps a .safetensors file read-only and validates its header
// strictly (see parseSafetensors for the rules): every problem is an error
// naming the file (and tensor), never a panic. Dtypes F32, F16, BF16, I32 and
// I64 are accepted.
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
	name        string
	dtype       DType
	shape       []int64
	begin, end  int64
	haveDType   bool
	haveShape   bool
	haveOffsets bool
}

// parseSafetensors validates buf (the whole file) and returns views into it.
// The rules are the reference loader's (the Rust safetensors crate), plus a
// duplicate-key check it lacks and a cap of maxTensors entries:
//   - an 8-byte little-endian header length N, at most maxHeaderLen and within
//     the file;
//   - N bytes of UTF-8 JSON: one object starting at the first byte, no
//     duplicate keys, only whitespace after it;
//   - "__metadata__", when present, maps strings to strings (or is null);
//   - every other key is a tensor {"dtype", "shape", "data_offsets": [begin,
//     end]} with a known dtype, non-negative dims, and end-begin equal to
//     elements × dtype size (computed without overflow);
//   - sorted by offset, the tensors tile the data section exactly: the first
//     begins at 0, each begins where the previous ends (no byte belongs to
//     two tensors, none to no tensor), and the last ends at the end of file.
func parseSafetensors(path string, buf []byte) (*SafetensorsFile, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("%s: not a safetensors file: %d bytes, need at least 8", path, len(buf))
	}
	hlen := binary.LittleEndian.Uint64(buf[:8])
	if hlen > maxHeaderLen {
		return nil, fmt.Errorf("%s: safetensors header length %d exceeds the format's %d byte limit", path, hlen, maxHeaderLen)
	}
	if hlen > uint64(len(buf)-8) {
		return nil, fmt.Errorf("%s: safetensors header length %d but the file has only %d bytes after it (truncated?)", path, hlen, len(buf)-8)
	}
	header := buf[8 : 8+hlen]
	data := buf[8+hlen:]
	if len(header) == 0 || header[0] != '{' {
		return nil, fmt.Errorf("%s: safetensors header is not a JSON object (it must start with '{')", path)
	}
	if !utf8.Valid(header) {
		return nil, fmt.Errorf("%s: safetensors header is not valid UTF-8", path)
	}
	f := &SafetensorsFile{Path: path, Metadata: map[string]string{}, Tensors: map[string]*Tensor{}}
	var entries []stEntry
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber() // shape dims arrive as tokens (decodeShape), exact
	err := jsonObject(dec, func(key string) error {
		if key == "__metadata__" {
			return decodeMetadata(dec, f.Metadata)
		}
		if len(entries) >= maxTensors {
			return fmt.Errorf("more than %d tensors", maxTensors)
		}
		e, err := decodeEntry(dec, key)
		if err != nil {
			return fmt.Errorf("tensor %s: %w", quoteName(key), err)
		}
		entries = append(entries, e)
		return nil
	})
	if err == nil {
		err = jsonEnd(dec)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: safetensors header: %w", path, err)
	}
	if err := checkLayout(entries, int64(len(data))); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, e := range entries {
		shape := make([]int, len(e.shape))
		for i, d := range e.shape {
			shape[i] = int(d)
		}
		f.Tensors[e.name] = &Tensor{Name: e.name, DType: e.dtype, Shape: shape, data: data[e.begin:e.end:e.end], file: path, raw: e.name}
	}
	return f, nil
}

// decodeEntry reads one tensor's header object {"dtype", "shape",
// "data_offsets"} and checks it on its own (dtype known, shape and offsets
// consistent); checkLayout checks the entries against each other.
func decodeEntry(dec *json.Decoder, name string) (stEntry, error) {
	e := stEntry{name: name}
	err := jsonObject(dec, func(key string) error {
		switch key {
		case "dtype":
			var s string
			if err := dec.Decode(&s); err != nil {
				return fmt.Errorf("dtype: %w", err)
			}
			e.dtype, e.haveDType = DType(s), true
			if e.dtype.Size() == 0 {
				return fmt.Errorf("unsupported dtype %s (want F32, F16, BF16, I32 or I64)", quoteName(s))
			}
		case "shape":
			shape, err := decodeShape(dec)
			if err != nil {
				return fmt.Errorf("shape: %w", err)
			}
			e.shape, e.haveShape = shape, shape != nil
		case "data_offsets":
			var off []int64
			if err := dec.Decode(&off); err != nil {
				return fmt.Errorf("data_offsets: %w", err)
			}
			if len(off) != 2 {
				return fmt.Errorf("data_offsets must have 2 entries, got %d", len(off))
			}
			e.begin, e.end, e.haveOffsets = off[0], off[1], true
		default:
			return fmt.Errorf("unknown field %s in the header entry", quoteName(key))
		}
		return nil
	})
	switch {
	case err != nil:
		return e, err
	case !e.haveDType:
		return e, errors.New("missing dtype")
	case !e.haveShape:
		return e, errors.New("missing shape")
	case !e.haveOffsets:
		return e, errors.New("missing data_offsets")
	}
	size := e.dtype.Size()
	nbytes, ok := checkedNumel(e.shape, size)
	if !ok {
		return e, fmt.Errorf("invalid shape %s (negative or overflowing)", shapeString(e.shape))
	}
	nbytes *= size
	if e.begin < 0 || e.end < e.begin {
		return e, fmt.Errorf("data_offsets [%d, %d] are not an interval of the data section", e.begin, e.end)
	}
	if e.end-e.begin != int64(nbytes) {
		return e, fmt.Errorf("data_offsets [%d, %d] span %d bytes, shape %s of %s needs %d", e.begin, e.end, e.end-e.begin, shapeString(e.shape), e.dtype, nbytes)
	}
	return e, nil
}

// maxDims caps a tensor's dimensions, read before anything is allocated for
// them (ESM2 tensors have 1 or 2; the .pt reader has the same cap).
const maxDims = ptMaxDims

// decodeShape reads a shape, a JSON array of at most maxDims integers (nil
// for null), one token at a time: a header of millions of dims is refused
// at the first one over the cap, not allocated.
func decodeShape(dec *json.Decoder) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("got %s where an array of integers was expected", jsonTokenKind(tok))
	}
	shape := []int64{}
	for dec.More() {
		if len(shape) == maxDims {
			return nil, fmt.Errorf("more than %d dimensions", maxDims)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		n, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("got %s where an integer was expected", jsonTokenKind(tok))
		}
		d, err := n.Int64()
		if err != nil {
			return nil, fmt.Errorf("dimension %s is not an integer that fits 64 bits", n)
		}
		shape = append(shape, d)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, err
	}
	return shape, nil
}

// checkLayout checks that entries tile the data section [0, dataLen)
// exactly; it sorts entries by offset. A tensor whose offsets lie past the
// data section is named first, whatever gap its absence leaves.
func checkLayout(entries []stEntry, dataLen int64) error {
	for _, e := range entries {
		if e.end > dataLen {
			return fmt.Errorf("tensor %s: data_offsets [%d, %d] outside the %d byte data section (truncated file?)", quoteName(e.name), e.begin, e.end, dataLen)
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.begin != b.begin {
			return a.begin < b.begin
		}
		if a.end != b.end {
			return a.end < b.end
		}
		return a.name < b.name
	})
	var pos int64 // end of the bytes covered so far
	for i, e := range entries {
		if e.end > dataLen {
			return fmt.Errorf("tensor %s: data_offsets [%d, %d] outside the %d byte data section (truncated file?)", quoteName(e.name), e.begin, e.end, dataLen)
		}
		switch {
		case e.begin < pos:
			p := entries[i-1]
			return fmt.Errorf("tensor %s: data_offsets [%d, %d] overlap those of tensor %s [%d, %d]; every byte must belong to one tensor",
				quoteName(e.name), e.begin, e.end, quoteName(p.name), p.begin, p.end)
		case e.begin > pos:
			return fmt.Errorf("tensor %s: data_offsets [%d, %d] leave bytes [%d, %d] of the data section in no tensor", quoteName(e.name), e.begin, e.end, pos, e.begin)
		}
		pos = e.end
	}
	if pos != dataLen {
		last := "no tensor"
		if len(entries) > 0 {
			last = "tensor " + quoteName(entries[len(entries)-1].name)
		}
		return fmt.Errorf("the data section has %d bytes but the tensors cover only [0, %d) (the last is %s): %d trailing bytes belong to no tensor",
			dataLen, pos, last, dataLen-pos)
	}
	return nil
}

// decodeMetadata reads the "__metadata__" value: null or an object of
// strings, without duplicate keys.
func decodeMetadata(dec *json.Decoder, into map[string]string) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("__metadata__: %w", err)
	}
	if string(raw) == "null" {
		return nil
	}
	md := json.NewDecoder(bytes.NewReader(raw))
	err := jsonObject(md, func(key string) error {
		if len(into) >= maxTensors {
			return fmt.Errorf("more than %d entries", maxTensors)
		}
		var v string
		if err := md.Decode(&v); err != nil {
			return fmt.Errorf("key %s: %w", quoteName(key), err)
		}
		into[key] = v
		return nil
	})
	if err != nil {
		return fmt.Errorf("__metadata__ must map strings to strings: %w", err)
	}
	return nil
}

// jsonObject reads one JSON object from dec, calling fn with each key while
// dec is positioned at that key's value (fn must consume the value). A key
// that appears twice is an error: encoding/json would keep the last one
// silently, and another reader might keep the first.
func jsonObject(dec *json.Decoder, fn func(key string) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("got %s where a JSON object was expected", jsonTokenKind(tok))
	}
	seen := map[string]struct{}{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok { // the decoder only yields strings in key position
			return fmt.Errorf("object key is %s", jsonTokenKind(tok))
		}
		if _, dup := seen[key]; dup {
			return fmt.Errorf("duplicate key %s", quoteName(key))
		}
		seen[key] = struct{}{}
		if err := fn(key); err != nil {
			return err
		}
	}
	_, err = dec.Token() // the closing '}'
	return err
}

// jsonEnd reports an error unless dec has only whitespace left.
func jsonEnd(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("after the JSON object: %w", err)
	}
	return fmt.Errorf("%s after the JSON object", jsonTokenKind(tok))
}

func jsonTokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return "'" + v.String() + "'"
	case string:
		return "a string"
	case nil:
		return "null"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// shapeString formats a shape read from a file, cut like quoteName.
func shapeString(shape []int64) string {
	if len(shape) > 10 {
		return fmt.Sprintf("%v ... (%d dims)", shape[:10], len(shape))
	}
	return fmt.Sprint(shape)
}
