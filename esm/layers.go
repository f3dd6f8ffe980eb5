package esm

import "fmt"

// requestLayers returns a Request's layers as absolute indices 0..L:
// ls itself when none is negative (no allocation per batch), else a copy
// with the negative ones resolved (Config.ResolveLayer: -1 = L).
func (m *Model) requestLayers(ls []int) ([]int, error) {
	L, neg := m.Cfg.Layers, false
	for _, l := range ls {
		if l < -(L+1) || l > L {
			return nil, fmt.Errorf("esm: requested layer %d outside 0..%d (or %d..-1 from the end)", l, L, -(L + 1))
		}
		neg = neg || l < 0
	}
	if !neg {
		return ls, nil
	}
	abs := make([]int, len(ls))
	for i, l := range ls {
		abs[i] = (l + L + 1) % (L + 1)
	}
	return abs, nil
}
