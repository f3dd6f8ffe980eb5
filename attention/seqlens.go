package attention

import (
	"errors"
	"fmt"
)

// Seqlens describes a packed varlen batch: nseq sequences concatenated into T
// tokens with no padding. Cu is cu_seqlens in the FlashAttention sense:
// (nseq+1) int32, Cu[0] = 0, Cu[i+1]-Cu[i] = length of sequence i (>= 1),
// Cu[nseq] = T.
type Seqlens struct {
	Cu []int32 // (nseq+1) int32
}

// NewSeqlens builds cu_seqlens from per-sequence token counts.
func NewSeqlens(lengths []int) (Seqlens, error) {
	cu := make([]int32, len(lengths)+1)
	total := 0
	for i, n := range lengths {
		if n < 1 {
			return Seqlens{}, fmt.Errorf("attention: sequence %d has length %d (must be >= 1)", i, n)
		}
		total += n
		if total > 1<<31-1 {
			return Seqlens{}, fmt.Errorf("attention: %d tokens overflow int32 cu_seqlens", total)
		}
		cu[i+1] = int32(total)
	}
	return Seqlens{Cu: cu}, nil
}

// Validate checks the invariants of cu_seqlens against a total token count.
func (s Seqlens) Validate(total int) error {
	if len(s.Cu) < 2 {
		return errors.New("attention: cu_seqlens needs at least 2 entries (one sequence)")
	}
	if s.Cu[0] != 0 {
		return fmt.Errorf("attention: cu_seqlens[0] = %d, want 0", s.Cu[0])
	}
	for i := 1; i < len(s.Cu); i++ {
		if s.Cu[i] <= s.Cu[i-1] {
			return fmt.Errorf("attention: cu_seqlens not strictly increasing at %d (%d after %d)", i, s.Cu[i], s.Cu[i-1])
		}
	}
	if last := int(s.Cu[len(s.Cu)-1]); last != total {
		return fmt.Errorf("attention: cu_seqlens ends at %d but the batch has %d tokens", last, total)
	}
	return nil
}

// N is the number of sequences.
func (s Seqlens) N() int { return len(s.Cu) - 1 }

// Total is the number of tokens T.
func (s Seqlens) Total() int {
	if len(s.Cu) == 0 {
		return 0
	}
	return int(s.Cu[len(s.Cu)-1])
}

// Start is the first token of sequence i.
func (s Seqlens) Start(i int) int { return int(s.Cu[i]) }

// Len is the token count of sequence i.
func (s Seqlens) Len(i int) int { return int(s.Cu[i+1] - s.Cu[i]) }

// MaxLen is the longest sequence's token count.
func (s Seqlens) MaxLen() int {
	m := 0
	for i := 0; i < s.N(); i++ {
		m = max(m, s.Len(i))
	}
	return m
}
