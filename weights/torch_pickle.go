package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// This file validates a torch.save data.pkl before gopickle decodes it.
//
// gopickle trusts its input: it allocates every length field before reading
// (a FRAME or BINBYTES8 claiming 2^62 bytes is a fatal out-of-memory), it
// panics on some malformed streams (an odd SETITEMS, an unhashable dict key,
// an empty LONG1, opcode 0xff), its error messages print whole objects with
// %#v, and it resolves any global the stream names. ptScanPickle walks the
// opcode stream once, as gopickle will, simulating its stack with the kind of
// each value, and rejects anything gopickle could not decode safely:
//
//   - every length must fit in the bytes that really follow (and in the
//     current frame), numbers must be short, opcodes must be known;
//   - every global must be one a fair-esm checkpoint needs (ptAllowedGlobal);
//   - every operation must find values of the kinds gopickle and this
//     package's callbacks accept (a tuple for REDUCE, a dict for SETITEMS,
//     scalar dict keys, ...), so their error paths are never taken;
//   - MARKs and containers nest at most ptMaxNesting deep, and no container
//     is changed once it sits inside another (which also rules out cycles),
//     so the depth seen here is the depth of the decoded object graph;
//   - a conservative estimate of what gopickle will allocate (ptCost*) stays
//     under ptMaxDecodeBytes: a 1-byte EMPTY_DICT costs gopickle ~170 bytes,
//     so the size cap of data.pkl alone does not bound memory.
//
// The scanner's own memory is below its estimate (a stack entry is 16 bytes
// against ptCostPush), so it too stays within ptMaxDecodeBytes.

// Limits of the pickle scan. A real fair-esm data.pkl is small: the tiny test
// checkpoint (59 tensors) has a 7.5 KB data.pkl, about 130 bytes per tensor,
// so ESM2 15B (48 layers × 16 tensors + ~10) needs about 100 KB, plus a few KB
// of cfg. The limits are several hundred times that.
const (
	// ptMaxPickleBytes caps data.pkl (read into memory whole).
	ptMaxPickleBytes = 64 << 20
	// ptMaxDecodeBytes caps the estimated allocation of decoding it. The tiny
	// checkpoint's estimate is 450 KB (~7.5 KB a tensor; decoding really
	// keeps 100 KB live), so 15B's is ~6 MB, and ~35k tensors would fit.
	ptMaxDecodeBytes = 256 << 20
	// ptMaxNesting caps MARK nesting and container nesting. A fair-esm
	// checkpoint nests 3 deep ({"model": {name: tensor(args(pid tuple))}}).
	ptMaxNesting = 64
	// ptMaxNumberLine caps the text of INT/LONG/FLOAT/GET/PUT arguments, and
	// ptMaxLongBytes the bytes of LONG1/LONG4: gopickle decodes long integers
	// in quadratic time, and no checkpoint number needs more than 8 bytes.
	ptMaxNumberLine = 128
	ptMaxLongBytes  = 64
	// ptMaxGlobalName caps a global's module and name (torch's longest is
	// "_rebuild_parameter_with_state", 29 bytes).
	ptMaxGlobalName = 256
)

// Estimated bytes gopickle allocates per operation (live memory: the value,
// its interface box, its stack slot, slice and map growth). They come from
// measuring gopickle (go1.26, amd64) on pickles made of one operation repeated
// 100k times, rounded up to at least 1.4 times the live heap measured;
// TestPickleCostEstimate keeps checking that bound.
const (
	ptCostPush      = 64  // a stack slot (16 bytes, with append's growth slack) and a boxed scalar
	ptCostMark      = 384 // a new 16-slot stack segment and its meta-stack entry
	ptCostContainer = 256 // an empty dict, list, set or tuple
	ptCostListItem  = 64  // one item appended to a list
	ptCostDictItem  = 256 // one key and value set in a dict or an OrderedDict, or one attribute
	ptCostSetItem   = 192 // one item added to a set or frozenset
	ptCostMemo      = 128 // one memo entry (map slot with growth)
	ptCostObject    = 768 // an OrderedDict, a Namespace, a tensor, a storage, a global
	ptCostLong      = 256 // a LONG1/LONG4 integer (a big.Int), plus ptCostPerByte per byte
	ptCostPerByte   = 3   // a string or bytes value: the read buffer, the copy, line growth
)

// ptKind is the kind of a value on the simulated stack.
type ptKind uint8

const (
	pkNone ptKind = iota
	pkBool
	pkInt
	pkFloat
	pkStr
	pkBytes
	pkByteArray
	pkTuple
	pkList
	pkDict
	pkSet
	pkFrozenSet
	pkOrderedDict
	pkObject  // an argparse.Namespace instance
	pkGlobal  // a class or function named by GLOBAL/STACK_GLOBAL
	pkStorage // the result of a persistent load
	pkTensor  // the result of a tensor rebuild function
)

var ptKindNames = [...]string{
	pkNone: "None", pkBool: "bool", pkInt: "int", pkFloat: "float", pkStr: "str",
	pkBytes: "bytes", pkByteArray: "bytearray", pkTuple: "tuple", pkList: "list",
	pkDict: "dict", pkSet: "set", pkFrozenSet: "frozenset", pkOrderedDict: "OrderedDict",
	pkObject: "Namespace", pkGlobal: "global", pkStorage: "storage", pkTensor: "tensor",
}

func (k ptKind) String() string { return ptKindNames[k] }

// scalar kinds are the only dict keys and set items allowed: they hash in Go
// (a bytes value is a []byte, which panics as a map key) and print small.
func (k ptKind) scalar() bool { return k <= pkStr }

// ptGlobal is one allowed global.
type ptGlobal uint8

const (
	pgNone          ptGlobal = iota
	pgRebuildTensor          // torch._utils._rebuild_tensor_v2
	pgRebuildParam           // torch._utils._rebuild_parameter(_with_state)
	pgStorageClass           // torch.<X>Storage
	pgOrderedDict            // collections.OrderedDict
	pgNamespace              // argparse.Namespace
)

// ptStorageClasses are the typed storage classes torch.save names in
// persistent ids (torch/storage.py _pickle_storage_type); only some have a
// DType here (storageDTypes), the others are refused when a tensor uses them.
var ptStorageClasses = map[string]bool{
	"DoubleStorage": true, "FloatStorage": true, "HalfStorage": true, "BFloat16Storage": true,
	"LongStorage": true, "IntStorage": true, "ShortStorage": true, "CharStorage": true,
	"ByteStorage": true, "BoolStorage": true, "ComplexDoubleStorage": true, "ComplexFloatStorage": true,
	"QUInt8Storage": true, "QInt8Storage": true, "QInt32Storage": true, "QUInt4x2Storage": true,
	"QUInt2x4Storage": true, "Float8_e5m2Storage": true, "Float8_e4m3fnStorage": true,
	"Float8_e5m2fnuzStorage": true, "Float8_e4m3fnuzStorage": true, "UInt16Storage": true,
	"UInt32Storage": true, "UInt64Storage": true,
}

// ptAllowedGlobal says whether module.name is a global a fair-esm checkpoint
// uses: torch's tensor and parameter rebuild functions, the typed storage
// classes of persistent ids, collections.OrderedDict (state dicts) and
// argparse.Namespace (the model cfg). Nothing is ever called or imported;
// anything else (os.system, builtins.eval, copy_reg._reconstructor, ...) is
// refused, as torch.load(weights_only=True) would refuse it.
func ptAllowedGlobal(module, name string) ptGlobal {
	switch module {
	case "torch._utils":
		switch name {
		case "_rebuild_tensor_v2":
			return pgRebuildTensor
		case "_rebuild_parameter", "_rebuild_parameter_with_state":
			return pgRebuildParam
		}
	case "torch":
		if ptStorageClasses[name] {
			return pgStorageClass
		}
	case "collections":
		if name == "OrderedDict" {
			return pgOrderedDict
		}
	case "argparse":
		if name == "Namespace" {
			return pgNamespace
		}
	}
	return pgNone
}

// ptVal is one simulated stack (or memo) value.
type ptVal struct {
	kind ptKind
	glob ptGlobal // pkGlobal: which one
	id   int32    // container id (index into ptScanner.conts), -1 for a leaf
	n    int32    // pkTuple: length; pkStr: length
	off  int32    // pkStr: offset of its bytes in data
}

// ptCont is what the scanner knows about one container.
type ptCont struct {
	depth  uint16 // container levels below and including it
	sealed bool   // it sits inside another value and may no longer change
	items  int32  // items added so far (dicts: pairs)
}

// ptScanError is a rejected pickle: the opcode, its offset and why.
type ptScanError struct {
	off int
	op  string
	msg string
	err error // wrapped, when there is one
}

func (e *ptScanError) Error() string {
	if e.op == "" {
		return fmt.Sprintf("byte %d: %s", e.off, e.msg)
	}
	return fmt.Sprintf("byte %d (%s): %s", e.off, e.op, e.msg)
}

func (e *ptScanError) Unwrap() error { return e.err }

// errPtDisallowedGlobal is wrapped by the error for a refused global.
var errPtDisallowedGlobal = errors.New("global not allowed")

type ptScanner struct {
	data     []byte
	p        int // next byte to read
	frameEnd int // end of the current frame, -1 outside frames
	opOff    int // offset of the opcode being scanned
	opName   string

	stack []ptVal
	marks []int // stack length at each open MARK
	memo  map[int]ptVal
	conts []ptCont
	cost  int64
}

// ptScanPickle validates data (see the top of this file). It returns the
// estimated decode allocation in bytes.
func ptScanPickle(data []byte) (cost int64, err error) {
	if len(data) > ptMaxPickleBytes {
		return 0, &ptScanError{msg: fmt.Sprintf("%d bytes, more than the %d MiB limit", len(data), ptMaxPickleBytes>>20)}
	}
	s := &ptScanner{data: data, frameEnd: -1, memo: map[int]ptVal{}}
	for {
		done, err := s.step()
		if err != nil {
			return s.cost, err
		}
		if done {
			return s.cost, nil
		}
	}
}

func (s *ptScanner) fail(format string, args ...any) error {
	return &ptScanError{off: s.opOff, op: s.opName, msg: fmt.Sprintf(format, args...)}
}

func (s *ptScanner) charge(n int64) error {
	s.cost += n
	if s.cost > ptMaxDecodeBytes {
		return s.fail("decoding would allocate more than %d MiB (a fair-esm data.pkl needs under 10 MiB)", ptMaxDecodeBytes>>20)
	}
	return nil
}

// take reads n bytes as gopickle's read(n) does: inside a frame they must lie
// in it, except that at the exact end of a frame reading moves on to the
// bytes after it.
func (s *ptScanner) take(n uint64) ([]byte, error) {
	if s.frameEnd >= 0 {
		if s.p == s.frameEnd {
			if n != 0 {
				s.frameEnd = -1
			}
		} else if n > uint64(s.frameEnd-s.p) {
			return nil, s.fail("argument of %d bytes runs past the end of its frame (%d bytes left in it)", n, s.frameEnd-s.p)
		}
	}
	if n > uint64(len(s.data)-s.p) {
		return nil, s.fail("argument of %d bytes, but only %d bytes follow (truncated or corrupt)", n, len(s.data)-s.p)
	}
	b := s.data[s.p : s.p+int(n)]
	s.p += int(n)
	return b, nil
}

// line reads a newline-terminated argument as gopickle's readLine does and
// returns it without the newline. max < 0 means no cap.
func (s *ptScanner) line(max int) ([]byte, error) {
	end := len(s.data)
	if s.frameEnd >= 0 {
		if s.p == s.frameEnd {
			s.frameEnd = -1
		} else {
			end = s.frameEnd
		}
	}
	for i := s.p; i < end; i++ {
		if s.data[i] == '\n' {
			b := s.data[s.p:i]
			if max >= 0 && len(b) > max {
				return nil, s.fail("argument of %d bytes, more than %d", len(b), max)
			}
			s.p = i + 1
			return b, s.charge(int64(ptCostPerByte * (len(b) + 1)))
		}
	}
	where := "pickle"
	if end != len(s.data) {
		where = "frame"
	}
	return nil, s.fail("no newline before the end of the %s", where)
}

func (s *ptScanner) segment() []ptVal {
	base := 0
	if len(s.marks) > 0 {
		base = s.marks[len(s.marks)-1]
	}
	return s.stack[base:]
}

func (s *ptScanner) push(v ptVal) error {
	s.stack = append(s.stack, v)
	return s.charge(ptCostPush)
}

// pop removes the top value of the current MARK segment (gopickle's stack).
func (s *ptScanner) pop() (ptVal, error) {
	if len(s.segment()) == 0 {
		return ptVal{}, s.fail("stack underflow")
	}
	v := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	return v, nil
}

func (s *ptScanner) top() (*ptVal, error) {
	if len(s.segment()) == 0 {
		return nil, s.fail("stack underflow")
	}
	return &s.stack[len(s.stack)-1], nil
}

// popMark returns the values pushed since the last MARK (valid until the
// next push) and closes the MARK.
func (s *ptScanner) popMark() ([]ptVal, error) {
	if len(s.marks) == 0 {
		return nil, s.fail("no MARK to close")
	}
	base := s.marks[len(s.marks)-1]
	s.marks = s.marks[:len(s.marks)-1]
	items := s.stack[base:]
	s.stack = s.stack[:base]
	return items, nil
}

func (s *ptScanner) depth(v ptVal) int {
	if v.id < 0 {
		return 0
	}
	return int(s.conts[v.id].depth)
}

// newCont makes a container holding items (which it seals).
func (s *ptScanner) newCont(kind ptKind, items []ptVal, extra int64) (ptVal, error) {
	d := 0
	for _, it := range items {
		d = max(d, s.depth(it))
		if it.id >= 0 {
			s.conts[it.id].sealed = true
		}
	}
	if d+1 > ptMaxNesting {
		return ptVal{}, s.fail("values nested more than %d deep", ptMaxNesting)
	}
	if err := s.charge(ptCostContainer + extra); err != nil {
		return ptVal{}, err
	}
	s.conts = append(s.conts, ptCont{depth: uint16(d + 1), items: int32(len(items))})
	return ptVal{kind: kind, id: int32(len(s.conts) - 1), n: int32(len(items))}, nil
}

// addItems puts items into the container target, which must still be open.
func (s *ptScanner) addItems(target ptVal, items []ptVal, itemCost int64) error {
	c := &s.conts[target.id]
	if c.sealed {
		return s.fail("%s changed after it was put inside another value (a recursive or reordered pickle; torch.save never writes one)", target.kind)
	}
	d := int(c.depth)
	for _, it := range items {
		if it.id == target.id {
			return s.fail("%s put inside itself", target.kind)
		}
		d = max(d, s.depth(it)+1)
		if it.id >= 0 {
			s.conts[it.id].sealed = true
		}
	}
	if d > ptMaxNesting {
		return s.fail("values nested more than %d deep", ptMaxNesting)
	}
	c.depth = uint16(d)
	c.items += int32(len(items))
	if c.items < 0 {
		return s.fail("too many items")
	}
	return s.charge(itemCost * int64(len(items)))
}

// str makes a string value of b, a subslice of s.data.
func (s *ptScanner) str(b []byte) (ptVal, error) {
	if err := s.charge(int64(ptCostPerByte * len(b))); err != nil {
		return ptVal{}, err
	}
	// The offset of a subslice is the difference of the capacities.
	return ptVal{kind: pkStr, id: -1, n: int32(len(b)), off: int32(cap(s.data) - cap(b))}, nil
}

func leaf(k ptKind) ptVal { return ptVal{kind: k, id: -1} }

func (s *ptScanner) checkGlobal(module, name string) (ptVal, error) {
	g := ptAllowedGlobal(module, name)
	if g == pgNone {
		return ptVal{}, &ptScanError{off: s.opOff, op: s.opName, err: errPtDisallowedGlobal,
			msg: fmt.Sprintf("refusing the Python global %s: a fair-esm checkpoint references only torch._utils tensor and parameter rebuilders, torch.*Storage classes, collections.OrderedDict and argparse.Namespace, and nothing from the file is ever run",
				ptGlobalName(module, name))}
	}
	if err := s.charge(ptCostObject); err != nil {
		return ptVal{}, err
	}
	return ptVal{kind: pkGlobal, glob: g, id: -1}, nil
}

// ptOpNames names every opcode gopickle knows ("" for the others).
var ptOpNames = [256]string{
	'(': "MARK", '.': "STOP", '0': "POP", '1': "POP_MARK", '2': "DUP", 'F': "FLOAT", 'I': "INT",
	'J': "BININT", 'K': "BININT1", 'L': "LONG", 'M': "BININT2", 'N': "NONE", 'P': "PERSID",
	'Q': "BINPERSID", 'R': "REDUCE", 'S': "STRING", 'T': "BINSTRING", 'U': "SHORT_BINSTRING",
	'V': "UNICODE", 'X': "BINUNICODE", 'a': "APPEND", 'b': "BUILD", 'c': "GLOBAL", 'd': "DICT",
	'}': "EMPTY_DICT", 'e': "APPENDS", 'g': "GET", 'h': "BINGET", 'i': "INST", 'j': "LONG_BINGET",
	'l': "LIST", ']': "EMPTY_LIST", 'o': "OBJ", 'p': "PUT", 'q': "BINPUT", 'r': "LONG_BINPUT",
	's': "SETITEM", 't': "TUPLE", ')': "EMPTY_TUPLE", 'u': "SETITEMS", 'G': "BINFLOAT",
	0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1",
	0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8a: "LONG1", 0x8b: "LONG4",
	'B': "BINBYTES", 'C': "SHORT_BINBYTES", 0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8",
	0x8e: "BINBYTES8", 0x8f: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
	0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
	0x98: "READONLY_BUFFER",
}

// step scans one opcode; done is true after STOP.
func (s *ptScanner) step() (done bool, err error) {
	s.opOff, s.opName = s.p, ""
	if s.p == len(s.data) {
		return false, s.fail("pickle ends without STOP (truncated)")
	}
	b, err := s.take(1)
	if err != nil {
		return false, err
	}
	op := b[0]
	name := ptOpNames[op]
	if name == "" {
		return false, s.fail("unknown opcode 0x%02x (not a pickle, or corrupt)", op)
	}
	s.opName = name

	u8 := func() (uint64, error) {
		b, err := s.take(1)
		if err != nil {
			return 0, err
		}
		return uint64(b[0]), nil
	}
	u32 := func() (uint64, error) {
		b, err := s.take(4)
		if err != nil {
			return 0, err
		}
		return uint64(binary.LittleEndian.Uint32(b)), nil
	}
	u64 := func() (uint64, error) {
		b, err := s.take(8)
		if err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(b), nil
	}
	// counted reads a length (by lenFn), then that many bytes.
	counted := func(lenFn func() (uint64, error)) ([]byte, error) {
		n, err := lenFn()
		if err != nil {
			return nil, err
		}
		return s.take(n)
	}
	pushStr := func(b []byte, err error) error {
		if err != nil {
			return err
		}
		v, err := s.str(b)
		if err != nil {
			return err
		}
		return s.push(v)
	}
	pushBytes := func(kind ptKind, b []byte, err error) error {
		if err != nil {
			return err
		}
		if err := s.charge(int64(ptCostPerByte * len(b))); err != nil {
			return err
		}
		return s.push(leaf(kind))
	}
	memoGet := func(i int64) error {
		v, ok := s.memo[int(i)]
		if !ok {
			return s.fail("memo entry %d was never stored", i)
		}
		return s.push(v)
	}
	memoPut := func(i int64) error {
		v, err := s.top()
		if err != nil {
			return err
		}
		s.memo[int(i)] = *v
		return s.charge(ptCostMemo)
	}

	switch op {
	case 0x80: // PROTO
		v, err := u8()
		if err != nil {
			return false, err
		}
		if v > 5 {
			return false, s.fail("pickle protocol %d, at most 5 is supported", v)
		}
	case 0x95: // FRAME
		n, err := u64()
		if err != nil {
			return false, err
		}
		if s.frameEnd >= 0 && s.p < s.frameEnd {
			return false, s.fail("a new frame starts %d bytes before the end of the current one", s.frameEnd-s.p)
		}
		if n > uint64(len(s.data)-s.p) {
			return false, s.fail("frame of %d bytes, but only %d bytes follow (truncated or corrupt)", n, len(s.data)-s.p)
		}
		if err := s.charge(int64(n) + ptCostObject); err != nil {
			return false, err
		}
		s.frameEnd = s.p + int(n)
	case '.': // STOP
		if _, err := s.pop(); err != nil {
			return false, err
		}
		return true, nil

	// Scalars.
	case 'N':
		return false, s.push(leaf(pkNone))
	case 0x88, 0x89:
		return false, s.push(leaf(pkBool))
	case 'J', 'K', 'M':
		size := uint64(4) // BININT
		switch op {
		case 'K':
			size = 1
		case 'M':
			size = 2
		}
		if _, err := s.take(size); err != nil {
			return false, err
		}
		return false, s.push(leaf(pkInt))
	case 'G':
		if _, err := s.take(8); err != nil {
			return false, err
		}
		return false, s.push(leaf(pkFloat))
	case 'I':
		l, err := s.line(ptMaxNumberLine)
		if err != nil {
			return false, err
		}
		if string(l) == "00" || string(l) == "01" {
			return false, s.push(leaf(pkBool))
		}
		if _, err := strconv.Atoi(string(l)); err != nil {
			return false, s.fail("bad integer %s", ptQuoteRaw(string(l)))
		}
		return false, s.push(leaf(pkInt))
	case 'L':
		l, err := s.line(ptMaxNumberLine)
		if err != nil {
			return false, err
		}
		if len(l) > 0 && l[len(l)-1] == 'L' {
			l = l[:len(l)-1]
		}
		if _, err := strconv.ParseInt(string(l), 10, 64); err != nil {
			if ne, ok := err.(*strconv.NumError); !ok || ne.Err != strconv.ErrRange {
				return false, s.fail("bad integer %s", ptQuoteRaw(string(l)))
			}
		}
		return false, s.push(leaf(pkInt))
	case 'F':
		l, err := s.line(ptMaxNumberLine)
		if err != nil {
			return false, err
		}
		if _, err := strconv.ParseFloat(string(l), 64); err != nil {
			return false, s.fail("bad float %s", ptQuoteRaw(string(l)))
		}
		return false, s.push(leaf(pkFloat))
	case 0x8a, 0x8b: // LONG1, LONG4
		var n uint64
		if op == 0x8a {
			n, err = u8()
		} else {
			n, err = u32()
			if err == nil && n >= 1<<31 {
				return false, s.fail("negative length")
			}
		}
		if err != nil {
			return false, err
		}
		if n == 0 || n > ptMaxLongBytes {
			return false, s.fail("integer of %d bytes (want 1..%d)", n, ptMaxLongBytes)
		}
		if _, err := s.take(n); err != nil {
			return false, err
		}
		if err := s.charge(ptCostLong + int64(ptCostPerByte*n)); err != nil {
			return false, err
		}
		return false, s.push(leaf(pkInt))

	// Strings and bytes.
	case 'X':
		return false, pushStr(counted(u32))
	case 0x8c, 'U':
		return false, pushStr(counted(u8))
	case 0x8d:
		return false, pushStr(counted(u64))
	case 'T':
		n, err := u32()
		if err != nil {
			return false, err
		}
		if n >= 1<<31 {
			return false, s.fail("negative length")
		}
		return false, pushStr(s.take(n))
	case 'V':
		return false, pushStr(s.line(-1))
	case 'S':
		l, err := s.line(-1)
		if err != nil {
			return false, err
		}
		if len(l) < 2 || l[0] != l[len(l)-1] || (l[0] != '\'' && l[0] != '"') {
			return false, s.fail("argument is not a quoted string")
		}
		return false, pushStr(l[1:len(l)-1], nil)
	case 'B':
		b, err := counted(u32)
		return false, pushBytes(pkBytes, b, err)
	case 'C':
		b, err := counted(u8)
		return false, pushBytes(pkBytes, b, err)
	case 0x8e:
		b, err := counted(u64)
		return false, pushBytes(pkBytes, b, err)
	case 0x96:
		b, err := counted(u64)
		return false, pushBytes(pkByteArray, b, err)

	// Stack and memo.
	case '(':
		if len(s.marks) >= ptMaxNesting {
			return false, s.fail("MARKs nested more than %d deep", ptMaxNesting)
		}
		s.marks = append(s.marks, len(s.stack))
		return false, s.charge(ptCostMark)
	case '0': // POP: the top value, or the MARK when the segment is empty
		if len(s.segment()) == 0 {
			_, err := s.popMark()
			return false, err
		}
		_, err := s.pop()
		return false, err
	case '1':
		_, err := s.popMark()
		return false, err
	case '2':
		v, err := s.top()
		if err != nil {
			return false, err
		}
		return false, s.push(*v)
	case 'h':
		i, err := u8()
		if err != nil {
			return false, err
		}
		return false, memoGet(int64(i))
	case 'j':
		i, err := u32()
		if err != nil {
			return false, err
		}
		return false, memoGet(int64(i))
	case 'g':
		l, err := s.line(ptMaxNumberLine)
		if err != nil {
			return false, err
		}
		i, err := strconv.Atoi(string(l))
		if err != nil {
			return false, s.fail("bad memo index %s", ptQuoteRaw(string(l)))
		}
		return false, memoGet(int64(i))
	case 'q':
		i, err := u8()
		if err != nil {
			return false, err
		}
		return false, memoPut(int64(i))
	case 'r':
		i, err := u32()
		if err != nil {
			return false, err
		}
		return false, memoPut(int64(i))
	case 'p':
		l, err := s.line(ptMaxNumberLine)
		if err != nil {
			return false, err
		}
		i, err := strconv.Atoi(string(l))
		if err != nil || i < 0 {
			return false, s.fail("bad memo index %s", ptQuoteRaw(string(l)))
		}
		return false, memoPut(int64(i))
	case 0x94: // MEMOIZE
		return false, memoPut(int64(len(s.memo)))

	// Containers.
	case ')', ']', '}', 0x8f:
		kind := pkTuple
		switch op {
		case ']':
			kind = pkList
		case '}':
			kind = pkDict
		case 0x8f:
			kind = pkSet
		}
		v, err := s.newCont(kind, nil, 0)
		if err != nil {
			return false, err
		}
		return false, s.push(v)
	case 't', 'l', 'd', 0x91: // TUPLE, LIST, DICT, FROZENSET from the MARK segment
		items, err := s.popMark()
		if err != nil {
			return false, err
		}
		kind := pkTuple
		var extra int64
		switch op {
		case 'l':
			kind = pkList
		case 'd':
			kind = pkDict
			if len(items)%2 != 0 {
				return false, s.fail("odd number (%d) of keys and values", len(items))
			}
			for i := 0; i < len(items); i += 2 {
				if !items[i].kind.scalar() {
					return false, s.fail("dict key is a %s (only str, int, float, bool and None keys are supported)", items[i].kind)
				}
			}
			extra = int64(ptCostDictItem) * int64(len(items)/2)
		case 0x91:
			kind = pkFrozenSet
			for _, it := range items {
				if !it.kind.scalar() {
					return false, s.fail("frozenset item is a %s (only str, int, float, bool and None are supported)", it.kind)
				}
			}
			extra = int64(ptCostSetItem) * int64(len(items))
		}
		v, err := s.newCont(kind, items, extra)
		if err != nil {
			return false, err
		}
		if op == 'd' {
			v.n = int32(len(items) / 2)
			s.conts[v.id].items = v.n
		}
		return false, s.push(v)
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		if len(s.segment()) < n {
			return false, s.fail("stack underflow")
		}
		items := append([]ptVal(nil), s.stack[len(s.stack)-n:]...)
		s.stack = s.stack[:len(s.stack)-n]
		v, err := s.newCont(pkTuple, items, 0)
		if err != nil {
			return false, err
		}
		return false, s.push(v)
	case 'a', 'e': // APPEND, APPENDS
		var items []ptVal
		if op == 'a' {
			v, err := s.pop()
			if err != nil {
				return false, err
			}
			items = []ptVal{v}
		} else {
			m, err := s.popMark()
			if err != nil {
				return false, err
			}
			items = append([]ptVal(nil), m...)
		}
		t, err := s.top()
		if err != nil {
			return false, err
		}
		if t.kind != pkList {
			return false, s.fail("appends to a %s, not a list", t.kind)
		}
		return false, s.addItems(*t, items, ptCostListItem)
	case 's', 'u': // SETITEM, SETITEMS
		var items []ptVal
		if op == 's' {
			if len(s.segment()) < 2 {
				return false, s.fail("stack underflow")
			}
			items = append([]ptVal(nil), s.stack[len(s.stack)-2:]...)
			s.stack = s.stack[:len(s.stack)-2]
		} else {
			m, err := s.popMark()
			if err != nil {
				return false, err
			}
			items = append([]ptVal(nil), m...)
		}
		if len(items)%2 != 0 {
			return false, s.fail("odd number (%d) of keys and values", len(items))
		}
		t, err := s.top()
		if err != nil {
			return false, err
		}
		if t.kind != pkDict && t.kind != pkOrderedDict {
			return false, s.fail("sets items of a %s, not a dict", t.kind)
		}
		var vals []ptVal
		for i := 0; i < len(items); i += 2 {
			if !items[i].kind.scalar() {
				return false, s.fail("dict key is a %s (only str, int, float, bool and None keys are supported)", items[i].kind)
			}
			vals = append(vals, items[i+1])
		}
		return false, s.addItems(*t, vals, ptCostDictItem)
	case 0x90: // ADDITEMS
		m, err := s.popMark()
		if err != nil {
			return false, err
		}
		items := append([]ptVal(nil), m...)
		t, err := s.top()
		if err != nil {
			return false, err
		}
		if t.kind != pkSet {
			return false, s.fail("adds items to a %s, not a set", t.kind)
		}
		for _, it := range items {
			if !it.kind.scalar() {
				return false, s.fail("set item is a %s (only str, int, float, bool and None are supported)", it.kind)
			}
		}
		return false, s.addItems(*t, items, ptCostSetItem)

	// Globals and calls.
	case 'c':
		mod, err := s.line(ptMaxGlobalName)
		if err != nil {
			return false, err
		}
		name, err := s.line(ptMaxGlobalName)
		if err != nil {
			return false, err
		}
		v, err := s.checkGlobal(string(mod), string(name))
		if err != nil {
			return false, err
		}
		return false, s.push(v)
	case 0x93: // STACK_GLOBAL
		name, err := s.pop()
		if err != nil {
			return false, err
		}
		mod, err := s.pop()
		if err != nil {
			return false, err
		}
		if name.kind != pkStr || mod.kind != pkStr {
			return false, s.fail("module and name are a %s and a %s, not strings", mod.kind, name.kind)
		}
		if mod.n > ptMaxGlobalName || name.n > ptMaxGlobalName {
			return false, s.fail("module or name longer than %d bytes", ptMaxGlobalName)
		}
		v, err := s.checkGlobal(string(s.data[mod.off:mod.off+mod.n]), string(s.data[name.off:name.off+name.n]))
		if err != nil {
			return false, err
		}
		return false, s.push(v)
	case 'Q': // BINPERSID
		pid, err := s.pop()
		if err != nil {
			return false, err
		}
		if pid.kind != pkTuple {
			return false, s.fail("persistent id is a %s, not a ('storage', ...) tuple", pid.kind)
		}
		s.conts[pid.id].sealed = true
		if err := s.charge(ptCostObject); err != nil {
			return false, err
		}
		return false, s.push(leaf(pkStorage))
	case 'R': // REDUCE
		args, err := s.pop()
		if err != nil {
			return false, err
		}
		fn, err := s.pop()
		if err != nil {
			return false, err
		}
		if args.kind != pkTuple {
			return false, s.fail("arguments are a %s, not a tuple", args.kind)
		}
		s.conts[args.id].sealed = true
		if fn.kind != pkGlobal || fn.glob == pgStorageClass {
			return false, s.fail("calls a %s, which cannot be called", ptDescribeKind(fn))
		}
		if err := s.charge(ptCostObject); err != nil {
			return false, err
		}
		switch fn.glob {
		case pgRebuildTensor, pgRebuildParam:
			return false, s.push(leaf(pkTensor))
		case pgOrderedDict:
			if args.n != 0 {
				return false, s.fail("OrderedDict called with %d arguments (torch.save passes none)", args.n)
			}
			v, err := s.newCont(pkOrderedDict, nil, 0)
			if err != nil {
				return false, err
			}
			return false, s.push(v)
		default: // pgNamespace: an object that keeps its arguments
			v, err := s.newCont(pkObject, nil, 0)
			if err != nil {
				return false, err
			}
			if err := s.addItems(v, []ptVal{args}, ptCostListItem); err != nil {
				return false, err
			}
			return false, s.push(v)
		}
	case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX
		var kw ptVal
		if op == 0x92 {
			if kw, err = s.pop(); err != nil {
				return false, err
			}
		}
		args, err := s.pop()
		if err != nil {
			return false, err
		}
		cls, err := s.pop()
		if err != nil {
			return false, err
		}
		if args.kind != pkTuple {
			return false, s.fail("arguments are a %s, not a tuple", args.kind)
		}
		if cls.kind != pkGlobal || cls.glob != pgNamespace {
			return false, s.fail("instantiates a %s; only argparse.Namespace objects are expected", ptDescribeKind(cls))
		}
		if err := s.charge(ptCostObject); err != nil {
			return false, err
		}
		v, err := s.newCont(pkObject, nil, 0)
		if err != nil {
			return false, err
		}
		in := []ptVal{args}
		if op == 0x92 {
			in = append(in, kw)
		}
		if err := s.addItems(v, in, ptCostListItem); err != nil {
			return false, err
		}
		return false, s.push(v)
	case 'b': // BUILD
		state, err := s.pop()
		if err != nil {
			return false, err
		}
		t, err := s.top()
		if err != nil {
			return false, err
		}
		if t.kind != pkObject && t.kind != pkOrderedDict {
			return false, s.fail("sets the state of a %s (only a Namespace or an OrderedDict has one here)", t.kind)
		}
		switch state.kind {
		case pkNone:
			return false, nil
		case pkDict:
			// The dict's values become attributes: one item each.
			if err := s.charge(int64(ptCostDictItem) * int64(s.conts[state.id].items)); err != nil {
				return false, err
			}
			return false, s.addItems(*t, []ptVal{state}, 0)
		default:
			return false, s.fail("state is a %s, not a dict", state.kind)
		}

	default: // PERSID, INST, OBJ, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER
		return false, s.fail("opcode not used by torch.save and not supported")
	}
	return false, nil
}

// ptDescribeKind names a value's kind, with the global's role for globals.
func ptDescribeKind(v ptVal) string {
	if v.kind != pkGlobal {
		return v.kind.String()
	}
	switch v.glob {
	case pgStorageClass:
		return "torch storage class"
	case pgOrderedDict:
		return "collections.OrderedDict"
	case pgNamespace:
		return "argparse.Namespace"
	}
	return "torch rebuild function"
}

// ptGlobalName writes module.name plainly when both are short dotted
// identifiers, else quoted and cut.
func ptGlobalName(module, name string) string {
	plain := func(s string) bool {
		if s == "" || len(s) > 100 {
			return false
		}
		for _, r := range s {
			if !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
		return true
	}
	if plain(module) && plain(name) {
		return module + "." + name
	}
	return ptQuoteRaw(module + "." + name)
}

// ptQuoteRaw quotes user text for a message, in at most ~200 bytes (cut
// before quoting, so that a long string is never copied whole).
func ptQuoteRaw(s string) string {
	const max = 200
	n := min(len(s), max)
	q := strconv.Quote(s[:n])
	for len(q) > max+2 { // escapes take up to 10 bytes a character
		n /= 2
		q = strconv.Quote(s[:n])
	}
	if n < len(s) {
		return q + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return q
}
