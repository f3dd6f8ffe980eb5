//go:build !cgo

package cpu

// attnKernels without cgo are the Go twins (attn_twin.go). ok is false:
// Attention uses the gonum matmul, faster than these plain loops.
type attnKernels struct{}

func newAttnKernels() attnKernels { return attnKernels{} }

func (attnKernels) ok(hd int) bool { return false }

func (a attnKernels) portable() attnKernels { return a }

func (a attnKernels) narrow() attnKernels { return a }

func (attnKernels) stripRows(n int) int { return headRows(n) }

func (attnKernels) pack(k, v []float32, ld, n, hd int, kt, vp []float32) {
	packGo(k, v, ld, n, hd, kt, vp)
}

func (attnKernels) packRows(x []float32, ld, n, h, hd, j0, j1 int, qp, kt, vp []float32) {
	packRowsGo(x, ld, n, h, hd, j0, j1, qp, kt, vp)
}

func (attnKernels) qk(q []float32, ld int, qp, kt []float32, rows, n, hd int, s, red []float32, sm smMode) {
	qkGo(q, ld, qp, kt, rows, n, hd, s, red, sm)
}

func (attnKernels) head(q []float32, ld int, kt, vp []float32, n, hd int, o []float32, ldo int, w []float32) {
	headGo(q, ld, kt, vp, n, hd, o, ldo, w)
}

func (attnKernels) pv(p []float32, n int, vp []float32, rows, hd int, o []float32, ldo int, inv []float32) {
	pvGo(p, n, vp, rows, hd, o, ldo, inv)
}

func (attnKernels) exps(x, y []float32) {
	for i, v := range x {
		y[i] = expk(v)
	}
}
