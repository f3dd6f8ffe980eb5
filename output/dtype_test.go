package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

var dtypes = []DType{Float32, Float16, BFloat16}

// withDType is s with its dtype set (a Reader's Schema always names one).
func withDType(s Schema, d DType) Schema {
	s.DType = d
	return s
}

// quantize is what a value written as d reads back as.
func quantize(x float32, d DType) float32 {
	switch d {
	case Float16:
		return f16ToF32(f32ToF16(x))
	case BFloat16:
		return bf16ToF32(f32ToBF16(x))
	}
	return x
}

// TestFloat16RoundTrip: every binary16 bit pattern survives
// float16 -> float32 -> float16 (NaNs stay NaN).
func TestFloat16RoundTrip(t *testing.T) {
	t.Parallel()
	for h := range 1 << 16 {
		x := f16ToF32(uint16(h))
		got := f32ToF16(x)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if !math.IsNaN(float64(x)) || got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x: float32 %v, back %#04x", h, x, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, x, got)
		}
	}
}

// TestFloat16RoundsToNearestEven: for every pair of adjacent finite
// binary16 values (subnormals, the subnormal/normal boundary and the last
// finite value included), their midpoint rounds to the even one and the
// float32 values just beside the midpoint round to the nearer one. The
// midpoint of two 11-bit significands has 12 bits: exact in float32.
func TestFloat16RoundsToNearestEven(t *testing.T) {
	t.Parallel()
	for _, sign := range []uint16{0, 0x8000} {
		for h := uint16(0); h < 0x7c00; h++ {
			lo, hi := sign|h, sign|(h+1)
			a, b := float64(f16ToF32(lo)), float64(f16ToF32(hi)) // hi is Inf for h = 0x7bff
			mid := float32(a + (b-a)/2)
			if h == 0x7bff {
				mid = float32(math.Copysign(65520, a))
			}
			if float64(mid) != a+(float64(f16ToF32(hi))-a)/2 && h != 0x7bff {
				t.Fatalf("midpoint of %#04x and %#04x is not exact in float32", lo, hi)
			}
			even := lo
			if h&1 == 1 {
				even = hi
			}
			for _, x := range []float32{mid, math.Nextafter32(mid, 0), f16ToF32(lo)} {
				if fast, rare := f32ToF16(x), f32ToF16Rare(math.Float32bits(x)); fast != rare {
					t.Fatalf("%v: the fast path gives %#04x, the general one %#04x", x, fast, rare)
				}
			}
			if got := f32ToF16(mid); got != even {
				t.Fatalf("tie %v between %#04x and %#04x rounds to %#04x, want %#04x", mid, lo, hi, got, even)
			}
			away := float32(math.Inf(1))
			if sign != 0 {
				away = float32(math.Inf(-1))
			}
			if got := f32ToF16(math.Nextafter32(mid, away)); got != hi {
				t.Fatalf("just above the tie %v: %#04x, want %#04x", mid, got, hi)
			}
			if got := f32ToF16(math.Nextafter32(mid, 0)); got != lo {
				t.Fatalf("just below the tie %v: %#04x, want %#04x", mid, got, lo)
			}
		}
	}
	// Below half the smallest subnormal (2^-24): signed zero.
	for _, c := range []struct {
		x    float32
		want uint16
	}{
		{0x1p-25, 0}, // tie between 0 and 2^-24: even is 0
		{math.Nextafter32(0x1p-25, 1), 1},
		{0x1p-26, 0},
		{-0x1p-26, 0x8000},
		{math.SmallestNonzeroFloat32, 0},
		{float32(math.Copysign(0, -1)), 0x8000},
		{0x1p-14, 0x0400},   // smallest normal
		{65504, 0x7bff},     // largest finite
		{65519.996, 0x7bff}, // just below the tie with Inf
		{65520, 0x7c00},
		{math.MaxFloat32, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := f32ToF16(c.x); got != c.want {
			t.Errorf("f32ToF16(%v) = %#04x, want %#04x", c.x, got, c.want)
		}
	}
}

// TestFloat16Nearest: for random float32 across float16's range, the result
// is at least as near as either neighbour (the tie rule is checked above).
func TestFloat16Nearest(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200_000 {
		x := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(44)-27)) // |x| < 2^17, down to 2^-27
		h := f32ToF16(x)
		if h&0x7fff >= 0x7c00 {
			if math.Abs(float64(x)) < 65520 {
				t.Fatalf("%v became %#04x", x, h)
			}
			continue
		}
		d := math.Abs(float64(x) - float64(f16ToF32(h)))
		for _, n := range []uint16{h + 1, h - 1} {
			if n&0x7fff >= 0x7c00 || (h&0x7fff == 0 && n == h-1) {
				continue
			}
			if dn := math.Abs(float64(x) - float64(f16ToF32(n))); dn < d {
				t.Fatalf("%v -> %#04x (off by %g), but %#04x is off by %g", x, h, d, n, dn)
			}
		}
	}
}

// TestBFloat16: every bfloat16 pattern round-trips; ties go to even; the
// values beside a tie go to the nearer neighbour.
func TestBFloat16(t *testing.T) {
	t.Parallel()
	for h := range 1 << 16 {
		x := bf16ToF32(uint16(h))
		got := f32ToBF16(x)
		if math.IsNaN(float64(x)) {
			if !math.IsNaN(float64(bf16ToF32(got))) {
				t.Fatalf("NaN %#04x came back as %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, x, got)
		}
		if h&0x7f80 == 0x7f80 || h&0x7fff == 0x7f7f {
			continue // Inf/NaN, or the last finite value (its tie is Inf, checked below)
		}
		tie := uint32(h)<<16 | 0x8000 // halfway to h+1 (same sign, away from zero)
		even := uint16(h)
		if h&1 == 1 {
			even = uint16(h) + 1
		}
		if got := f32ToBF16(math.Float32frombits(tie)); got != even {
			t.Fatalf("tie %#08x rounds to %#04x, want %#04x", tie, got, even)
		}
		if got := f32ToBF16(math.Float32frombits(tie + 1)); got != uint16(h)+1 {
			t.Fatalf("above tie %#08x: %#04x", tie, got)
		}
		if got := f32ToBF16(math.Float32frombits(tie - 1)); got != uint16(h) {
			t.Fatalf("below tie %#08x: %#04x", tie, got)
		}
	}
	if got := f32ToBF16(math.Float32frombits(0x7f7f8000)); got != 0x7f80 {
		t.Errorf("the tie above bfloat16's largest value: %#04x, want Inf", got)
	}
}

func TestFirstOutOfRange(t *testing.T) {
	t.Parallel()
	cases := []struct {
		d    DType
		v    []float32
		want int
	}{
		{Float32, []float32{math.MaxFloat32, -math.MaxFloat32}, -1},
		{Float16, []float32{65504, -65519.996, 1e-30}, -1},
		{Float16, []float32{1, 65520}, 1},
		{Float16, []float32{-65520}, 0},
		{Float16, []float32{0, math.MaxFloat32}, 1},
		{BFloat16, []float32{math.Float32frombits(0x7f7f7fff), 1e38}, -1},
		{BFloat16, []float32{2, -math.Float32frombits(0x7f7f8000)}, 1},
	}
	for _, c := range cases {
		if got := c.d.firstOutOfRange(c.v); got != c.want {
			t.Errorf("%s %v: %d, want %d", c.d, c.v, got, c.want)
		}
		// The bound agrees with the conversion: what is accepted is finite.
		for i, x := range c.v {
			if (i < c.want || c.want < 0) && c.d != Float32 {
				if q := quantize(x, c.d); math.IsInf(float64(q), 0) {
					t.Errorf("%s accepts %v, which becomes %v", c.d, x, q)
				}
			}
		}
	}
}

func TestParseDType(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]DType{"float32": Float32, "FP16": Float16, " float16": Float16, "bf16": BFloat16, "bfloat16": BFloat16} {
		if got, err := ParseDType(in); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseDType("int8"); err == nil || !strings.Contains(err.Error(), "float16") {
		t.Errorf("int8: %v", err)
	}
	if _, err := Create(filepath.Join(t.TempDir(), "x"), Parquet, Schema{Columns: testSchema.Columns, DType: "f8"}); err == nil || !strings.Contains(err.Error(), "unknown dtype") {
		t.Errorf("a schema with dtype f8: %v", err)
	}
}

// dtypeRows are testRows with values every dtype can hold.
func dtypeRows() []Row {
	rows := testRows(testSchema)
	rows[0].Values[0][0] = -65504
	rows[3].Values[1][4] = 6e-8 // a float16 subnormal
	for i := range rows {
		for c := range rows[i].Values {
			for j, x := range rows[i].Values[c] {
				if math.Abs(float64(x)) > 65504 {
					rows[i].Values[c][j] = float32(math.Mod(float64(x), 60000))
				}
			}
		}
	}
	return rows
}

// TestDTypeRoundTrip: for each dtype and format, Open reads back exactly
// the rounded values, the schema says the dtype, and the files store it as
// documented (npy descr, parquet leaf type and FLOAT16 annotation).
func TestDTypeRoundTrip(t *testing.T) {
	t.Parallel()
	rows := dtypeRows()
	for _, d := range dtypes {
		for _, f := range formats {
			s := testSchema
			s.DType = d
			path := filepath.Join(t.TempDir(), "emb")
			writeAll(t, path, f, s, rows)
			got, read := readOutput(t, path)
			if got.DType != d {
				t.Errorf("%s %s: schema dtype %q", d, f, got.DType)
			}
			want := make([]Row, len(rows))
			for i, r := range rows {
				want[i] = cloneRow(&r)
				for c := range want[i].Values {
					for j, x := range want[i].Values[c] {
						want[i].Values[c][j] = quantize(x, d)
					}
				}
			}
			compareRows(t, read, want)
			if d != Float32 && sameBits(read[0].Values[0], rows[0].Values[0]) {
				t.Errorf("%s %s: values were not rounded", d, f)
			}
			checkStoredDType(t, path, f, d)
		}
	}
}

func checkStoredDType(t *testing.T, path string, f Format, d DType) {
	t.Helper()
	if f == NPY {
		b, err := os.ReadFile(filepath.Join(path, "per_tok_33.npy"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "'descr': '" + d.npyDescr() + "'"; !strings.Contains(string(b[:npyHeaderLen]), want) {
			t.Errorf("%s npy header %q, want %s", d, b[:npyHeaderLen], want)
		}
		var m struct {
			LayoutVersion int   `json:"layout_version"`
			DType         DType `json:"dtype"`
		}
		mb, _ := os.ReadFile(filepath.Join(path, "metadata.json"))
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatal(err)
		}
		if m.DType != dtypeMeta(d) || m.LayoutVersion != layoutVersionOf(d) {
			t.Errorf("%s metadata.json: %s", d, mb)
		}
		return
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	pf, err := parquet.OpenFile(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	leaves := 0
	for _, e := range pf.Metadata().Schema {
		if e.Name != "element" || !e.Type.Valid {
			continue
		}
		leaves++
		_, f16 := e.LogicalType.Value.(*format.Float16Type)
		switch d {
		case Float32:
			if e.Type.V != format.Float {
				t.Errorf("float32 leaf of type %v", e.Type.V)
			}
		default:
			if e.Type.V != format.FixedLenByteArray || e.TypeLength.V != 2 || f16 != (d == Float16) {
				t.Errorf("%s leaf: type %v length %v FLOAT16 %v", d, e.Type.V, e.TypeLength.V, f16)
			}
		}
	}
	if leaves != len(testSchema.Columns) {
		t.Errorf("%s: %d float leaves, want %d", d, leaves, len(testSchema.Columns))
	}
	if d != Float32 {
		for _, rg := range pf.Metadata().RowGroups {
			for _, cc := range rg.Columns[parquetFixedCols:] {
				if st := cc.MetaData.Statistics; len(st.MinValue) != 0 || len(st.MaxValue) != 0 {
					t.Errorf("%s column %v: statistics %x..%x (ordered as bytes, so wrong)", d, cc.MetaData.PathInSchema, st.MinValue, st.MaxValue)
				}
			}
		}
	}
}

// TestDTypeOutOfRangeIsRefused: a float16 output refuses a value that
// would round to Inf, naming the record, column and element; the writer
// stays usable and the output holds the other rows.
func TestDTypeOutOfRangeIsRefused(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		s := testSchema
		s.DType = Float16
		path := filepath.Join(t.TempDir(), "emb")
		w, err := Create(path, f, s)
		if err != nil {
			t.Fatal(err)
		}
		rows := dtypeRows()
		bad := cloneRow(&rows[3])
		bad.Values[1][3*2+1] = -70000
		err = w.Write(&bad)
		if !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), `record 6 ("new\nline") column per_tok_33`) ||
			!strings.Contains(err.Error(), "-70000 at residue 3, element 1") || !strings.Contains(err.Error(), "float16") {
			t.Errorf("%s: error %v", f, err)
		}
		for i := range rows {
			if err := w.Write(&rows[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, got := readOutput(t, path); len(got) != len(rows) {
			t.Errorf("%s: %d rows, want %d", f, len(got), len(rows))
		}
	}
}

// TestDTypeMerge: merging keeps the dtype and the values bit for bit, in
// both formats and on both parquet paths; a source of another dtype is
// refused, naming it.
func TestDTypeMerge(t *testing.T) {
	t.Parallel()
	rows := dtypeRows()
	for _, d := range []DType{Float16, BFloat16} {
		for _, f := range formats {
			for _, rowPath := range []bool{false, true} {
				dir := t.TempDir()
				s := testSchema
				s.DType = d
				a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
				writeAll(t, a, f, s, rows[:3])
				writeAll(t, b, f, s, rows[3:])
				dst := filepath.Join(dir, "m")
				if _, err := merge(t.Context(), dst, []string{a, b}, MergeOptions{}, rowPath); err != nil {
					t.Fatalf("%s %s: %v", d, f, err)
				}
				gs, got := readOutput(t, dst)
				_, wa := readOutput(t, a)
				_, wb := readOutput(t, b)
				if gs.DType != d {
					t.Errorf("%s %s: merged dtype %q", d, f, gs.DType)
				}
				compareRows(t, got, append(wa, wb...))
				checkStoredDType(t, dst, f, d)

				c := filepath.Join(dir, "c")
				writeAll(t, c, f, testSchema, rows[3:]) // float32
				_, err := Merge(filepath.Join(dir, "m2"), []string{a, c}, MergeOptions{})
				if err == nil || !strings.Contains(err.Error(), "dtype float32, want "+string(d)) {
					t.Errorf("%s %s: merging a float32 source: %v", d, f, err)
				}
			}
		}
	}
}

// TestPartsRefuseOtherDType: a resumed run with another dtype is refused,
// naming the dtypes; an output complete under one dtype is not taken as
// complete for another.
func TestPartsRefuseOtherDType(t *testing.T) {
	t.Parallel()
	rows := indexed(4)
	for i := range rows {
		rows[i] = cloneRow(&rows[i])
		rows[i].Values[0][0] = 1 // testRows holds ±MaxFloat32
		rows[i].Values[1] = append([]float32(nil), rows[i].Values[1]...)
		for j, x := range rows[i].Values[1] {
			rows[i].Values[1][j] = float32(math.Mod(float64(x), 60000))
		}
	}
	for _, f := range formats {
		out := filepath.Join(t.TempDir(), "emb")
		s16 := testSchema
		s16.DType = Float16
		p, err := OpenParts(out, f, s16, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		writeParts(t, p, rows, 0, 2, 2)
		p.Close()
		_, err = OpenParts(out, f, testSchema, PartsOptions{Identity: testIdentity})
		if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "dtype float16, this run float32") {
			t.Errorf("%s: resuming float16 parts as float32: %v", f, err)
		}
		p, err = OpenParts(out, f, s16, PartsOptions{Identity: testIdentity})
		if err != nil {
			t.Fatal(err)
		}
		writeParts(t, p, rows, 2, 4, 2)
		if err := p.Finish(4, nil); err != nil {
			t.Fatal(err)
		}
		if s, got := readOutput(t, out); s.DType != Float16 || len(got) != 4 {
			t.Errorf("%s: %s output with %d rows", f, s.DType, len(got))
		}
		_, err = OpenParts(out, f, s16, PartsOptions{Identity: testIdentity})
		if !errors.Is(err, ErrComplete) {
			t.Errorf("%s: same dtype again: %v, want ErrComplete", f, err)
		}
		_, err = OpenParts(out, f, Schema{Columns: testSchema.Columns, DType: BFloat16}, PartsOptions{Identity: testIdentity})
		if errors.Is(err, ErrComplete) || err == nil {
			t.Errorf("%s: a bfloat16 run over a complete float16 output: %v", f, err)
		}
	}
}

// TestDTypeMergeCopiesRowGroups: large row groups of 2-byte dtypes are
// copied verbatim too (float16's annotation is kept), byte for byte.
func TestDTypeMergeCopiesRowGroups(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, d := range []DType{Float16, BFloat16} {
		dir := t.TempDir()
		s := withDType(bigSchema, d)
		big, small := filepath.Join(dir, "big"), filepath.Join(dir, "small")
		bigR := bigRows(mergeCopyRows, 8, 0, rng)
		smallR := bigRows(10, 8, mergeCopyRows, rng)
		writeAll(t, big, Parquet, s, bigR)
		writeAll(t, small, Parquet, s, smallR)
		dst := filepath.Join(dir, "merged")
		sum, err := Merge(dst, []string{big, small}, MergeOptions{})
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if sum.CopiedRows != int64(len(bigR)) {
			t.Errorf("%s: %d rows copied, want %d", d, sum.CopiedRows, len(bigR))
		}
		_, a := readOutput(t, big)
		_, b := readOutput(t, small)
		gs, got := readOutput(t, dst)
		if gs.DType != d {
			t.Errorf("%s: merged dtype %s", d, gs.DType)
		}
		compareRows(t, got, append(a, b...))
		src, out := openParquet(t, big), openParquet(t, dst)
		for c := range src.Metadata().RowGroups[0].Columns {
			if !bytes.Equal(chunkBytes(t, big, src, 0, c), chunkBytes(t, dst, out, 0, c)) {
				t.Errorf("%s column %d: the merged chunk is not the source's", d, c)
			}
		}
		for _, e := range out.Metadata().Schema {
			if e.Type.Valid && e.Type.V == format.FixedLenByteArray {
				if _, f16 := e.LogicalType.Value.(*format.Float16Type); f16 != (d == Float16) {
					t.Errorf("%s: merged leaf %s FLOAT16 %v", d, e.Name, f16)
				}
			}
		}
	}
}
