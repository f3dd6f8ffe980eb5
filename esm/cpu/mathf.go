package cpu

import "math"

// expf is a float32 exp (Cephes expf: range reduction by ln 2 and a degree-5
// polynomial), about 5x faster than math.Exp and within 2 ulp of it; see
// TestExpfAccuracy. Inputs below -87.3 return 0, above 88.7 return +Inf.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375
		c2    = -2.12194440e-4
	)
	if x < -87.33654 {
		return 0
	}
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	// round(x*log2e) half away from zero, without a call: int32 conversion
	// truncates toward zero.
	t := log2e * x
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	ni := int32(t)
	n := float32(ni)
	x = x - n*c1 - n*c2
	z := x * x
	y := ((((((1.9875691500e-4*x+1.3981999507e-3)*x+8.3334519073e-3)*x+4.1665795894e-2)*x+1.6666665459e-1)*x+5.0000001201e-1)*z + x + 1)
	e := ni + 127
	if e <= 0 { // subnormal result: scale in two steps
		return y * math.Float32frombits(uint32(e+64)<<23) * 5.421010862427522e-20 // 2^-64
	}
	return y * math.Float32frombits(uint32(e)<<23)
}

// gelu is the exact GELU 0.5*x*(1+erf(x/sqrt 2)) = 0.5*x*erfc(-x/sqrt 2),
// with erfc from Numerical Recipes' Chebyshev fit (fractional error < 1.2e-7
// everywhere, so the negative tail keeps its relative accuracy, unlike
// 1+erf). This is not the tanh approximation.
func gelu(x float32) float32 {
	z := float64(x) * -0.7071067811865476
	a := math.Abs(z)
	t := 1 / (1 + 0.5*a)
	p := -a*a - 1.26551223 + t*(1.00002368+t*(0.37409196+t*(0.09678418+t*(-0.18628806+t*(0.27886807+t*(-1.13520398+t*(1.48851587+t*(-0.82215223+t*0.17087277))))))))
	erfc := t * float64(expf(float32(p)))
	if z < 0 {
		erfc = 2 - erfc
	}
	return float32(0.5 * float64(x) * erfc)
}

// expSub sets r[i] = exp(r[i]-m) for every i (all r[i]-m <= 0, as in a
// softmax) and returns their sum. It is expf inlined into the loop so the
// polynomial chains of neighbouring elements overlap.
func expSub(r []float32, m float32) float32 {
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375
		c2    = -2.12194440e-4
	)
	var sum float32
	for i, v := range r {
		x := v - m
		if x < -87.33654 {
			r[i] = 0
			continue
		}
		ni := int32(log2e*x - 0.5) // x <= 0: round half away from zero
		n := float32(ni)
		x = x - n*c1 - n*c2
		z := x * x
		y := ((((((1.9875691500e-4*x+1.3981999507e-3)*x+8.3334519073e-3)*x+4.1665795894e-2)*x+1.6666665459e-1)*x+5.0000001201e-1)*z + x + 1)
		e := y * math.Float32frombits(uint32(ni+127)<<23)
		r[i] = e
		sum += e
	}
	return sum
}
