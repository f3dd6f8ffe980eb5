package esm

// DefaultCPUTokensPerBatch is the token budget where no device memory is
// reported (the CPU): fair-esm's default; larger batches do not run faster
// there.
const DefaultCPUTokensPerBatch = 4096

// MaxAutoTokensPerBatch caps the automatic GPU budget: past it the GEMMs are
// already large and bigger batches only add latency and host memory.
const MaxAutoTokensPerBatch = 65536

// ActivationBytesPerToken is what one token of a batch costs in activations
// on m's backend: the fp32 residual stream (4D) and logits (4V), plus the
// LayerNorm output (D), attention output (D), qkv (3D) and FFN (F) buffers in
// the compute precision (2 bytes in fp16/bf16, 4 in fp32).
func (m *Model) ActivationBytesPerToken() int {
	c := m.Cfg
	narrow := m.be.Precision().ElementBytes()
	return 4*c.Dim + 4*c.Vocab + narrow*(c.Dim+c.Dim+3*c.Dim+max(c.FFN, c.Dim))
}

// AutoTokensPerBatch is the token budget for m's device, decided once here:
// DefaultCPUTokensPerBatch where the backend reports no device memory;
// otherwise as many tokens as half the free memory (after the weights, which
// are loaded) holds, at most MaxAutoTokensPerBatch. Never less than one
// sequence of maxResidues residues plus BOS/EOS (maxResidues < 0: no
// truncation, DefaultMaxResidues is used as the floor). Call it on the
// goroutine that owns m's backend.
func (m *Model) AutoTokensPerBatch(maxResidues int) int {
	minToks := DefaultMaxResidues + 2
	if maxResidues > 0 {
		minToks = maxResidues + 2
	}
	free, _, err := m.be.MemInfo()
	if err != nil { // ErrNoDeviceMemory (the CPU), or not known
		return max(DefaultCPUTokensPerBatch, minToks)
	}
	n := int(min(free/2/uint64(m.ActivationBytesPerToken()), MaxAutoTokensPerBatch))
	return max(n, minToks)
}

// MaxCPUSequenceTokens is the longest sequence (tokens) the CPU embeds
// whole without truncation: 128k tokens, more than the longest known
// protein (titin, ~35k residues); memory is the host's.
const MaxCPUSequenceTokens = 1 << 17

// MaxSequenceTokens is the longest single sequence m's device can embed
// whole: what the free device memory holds (after the weights) where the
// backend reports it, else MaxCPUSequenceTokens. Call it on the goroutine
// that owns m's backend.
func (m *Model) MaxSequenceTokens() int {
	free, _, err := m.be.MemInfo()
	if err != nil { // ErrNoDeviceMemory (the CPU), or not known
		return MaxCPUSequenceTokens
	}
	return max(int(free/uint64(m.ActivationBytesPerToken())), DefaultMaxResidues+2)
}
