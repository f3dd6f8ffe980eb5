package esm

import (
	"fmt"
	"strings"
)

// Repr is a set of per-record representations the forward pass can pool
// from a layer: the one encoding of "which output" in esm2go (requests,
// output columns, CLI names). Combine with |.
type Repr uint8

const (
	Mean   Repr = 1 << iota // mean over residue tokens (BOS/EOS excluded): (nseq, D)
	BOS                     // the BOS (<cls>) row: (nseq, D)
	PerTok                  // every token's row (BOS and EOS included in Output; writers drop them): (T, D)
)

// Reprs lists every representation, in output column order.
var Reprs = []Repr{Mean, BOS, PerTok}

// Has reports whether r holds every representation of k.
func (r Repr) Has(k Repr) bool { return k != 0 && r&k == k }

// Kinds returns the single representations in r, in column order.
func (r Repr) Kinds() []Repr {
	var out []Repr
	for _, k := range Reprs {
		if r.Has(k) {
			out = append(out, k)
		}
	}
	return out
}

// String names r as a column prefix and a --include value: "mean", "bos",
// "per_tok"; a set is a comma list.
func (r Repr) String() string {
	var names []string
	for _, k := range r.Kinds() {
		switch k {
		case Mean:
			names = append(names, "mean")
		case BOS:
			names = append(names, "bos")
		case PerTok:
			names = append(names, "per_tok")
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseRepr reads names ("mean", "bos", "per_tok" or "per-tok", any case;
// each value may be a comma list) into a set.
func ParseRepr(vals []string) (Repr, error) {
	var r Repr
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(s)) {
			case "mean":
				r |= Mean
			case "bos":
				r |= BOS
			case "per_tok", "per-tok":
				r |= PerTok
			default:
				return 0, fmt.Errorf("unknown representation %q (want mean, bos or per_tok)", s)
			}
		}
	}
	if r == 0 {
		return 0, fmt.Errorf("no representation given (want mean, bos or per_tok)")
	}
	return r, nil
}
