package cpu

import "math"

// Plain Go twins of vmath's C kernels (vmath.go): the same math, one
// element at a time. The tests check the C kernels against them; the
// pure-Go build runs them.

// layerNormGo writes out = (x - mean)*rstd*w + b for every row of in
// (len(in)/d rows of width d; out may be in), rstd = 1/sqrt(var + eps),
// the mean and the variance (the mean of (x - mean)^2) summed in float64.
// A NaN or infinity in a row makes the whole output row NaN.
func layerNormGo(out, in, w, b []float32, d int, eps float32) {
	for r := 0; r+d <= len(in); r += d {
		row := in[r : r+d]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		m := float32(sum / float64(d))
		var sq float64
		for _, v := range row {
			x := float64(v - m)
			sq += x * x
		}
		rstd := float32(1 / math.Sqrt(sq/float64(d)+float64(eps)))
		orow := out[r : r+d]
		for i, v := range row {
			orow[i] = (v-m)*rstd*w[i] + b[i]
		}
	}
}

// addRowsGo adds bias (n) to every row of out (len(out)/n rows of width n).
func addRowsGo(out, bias []float32, n int) {
	for r := 0; r+n <= len(out); r += n {
		row := out[r : r+n]
		for i := range row {
			row[i] += bias[i]
		}
	}
}

// rotaryGo applies the rotary embedding to the q and k heads of len(pos)
// tokens of the packed qkv x (rows of stride ld; h heads of dim hd, q
// heads first, then k heads): q is first scaled by qs, then each head's
// dims i and i+hd/2 are rotated by the angle of the token's position p =
// pos[r], whose cos and sin are cos[p*hd/2+i] and sin[p*hd/2+i].
func rotaryGo(x []float32, ld int, pos []int32, cos, sin []float32, h, hd int, qs float32) {
	half := hd / 2
	for r, p := range pos {
		cs, sn := cos[int(p)*half:][:half], sin[int(p)*half:][:half]
		row := x[r*ld : r*ld+2*h*hd]
		for i := range row[:h*hd] {
			row[i] *= qs
		}
		for hh := 0; hh < 2*h; hh++ { // h query heads then h key heads
			v := row[hh*hd : (hh+1)*hd]
			for i := 0; i < half; i++ {
				x1, x2 := v[i], v[i+half]
				v[i] = x1*cs[i] - x2*sn[i]
				v[i+half] = x2*cs[i] + x1*sn[i]
			}
		}
	}
}
