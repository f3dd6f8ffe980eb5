package score

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/esm2go/esm2go/esm"
)

// Strategy is a set of scoring strategies (one or more, combined with |).
type Strategy uint8

const (
	// MaskedMarginals scores a substitution at residue i by
	// log p(mt) - log p(wt) at i, with residue i replaced by <mask> in
	// the wild type (one masked copy per mutated position).
	MaskedMarginals Strategy = 1 << iota
	// WTMarginals is the same difference read from one forward pass of
	// the unmasked wild type.
	WTMarginals
	// PLL is the pseudo-log-likelihood: every residue of a sequence masked
	// in turn, the log-probabilities of the true residues summed. A
	// mutant's score is PLL(mutant) - PLL(wild type); Result.PLLMutant
	// keeps PLL(mutant).
	PLL
)

// AllStrategies is every strategy.
const AllStrategies = MaskedMarginals | WTMarginals | PLL

var strategyNames = []struct {
	s    Strategy
	name string
}{{MaskedMarginals, "masked-marginals"}, {WTMarginals, "wt-marginals"}, {PLL, "pll"}}

// ParseStrategy reads strategy names (each value may be a comma list):
// masked-marginals, wt-marginals, pll (pseudo-ppl, predict.py's name for
// it, is accepted too).
func ParseStrategy(vals []string) (Strategy, error) {
	var s Strategy
	for _, v := range vals {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "pseudo-ppl" {
				name = "pll"
			}
			i := -1
			for k, n := range strategyNames {
				if n.name == name {
					i = k
				}
			}
			if i < 0 {
				return 0, fmt.Errorf("unknown strategy %s (want masked-marginals, wt-marginals or pll)", quote(name))
			}
			s |= strategyNames[i].s
		}
	}
	if s == 0 {
		return 0, errors.New("no strategy given")
	}
	return s, nil
}

// Has reports whether s includes every strategy of x.
func (s Strategy) Has(x Strategy) bool { return s&x == x && x != 0 }

// String lists the strategies of s, comma-separated, in a fixed order.
func (s Strategy) String() string {
	var names []string
	for _, n := range strategyNames {
		if s.Has(n.s) {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Variant is one mutant of one wild type.
type Variant struct {
	WildType int    // index into the wild types given to Score
	Mutant   Mutant // checked against that wild type (Mutant.Check)
}

// Result holds one variant's scores, in nats; a strategy not asked for is
// NaN. Higher means more likely under the model than the wild type.
type Result struct {
	MaskedMarginals float64
	WTMarginals     float64
	PLL             float64 // PLL(mutant) - PLL(wild type)
	PLLMutant       float64 // PLL(mutant)
}

// Options configures a Scorer.
type Options struct {
	// ToksPerBatch is the token budget of one packed batch of copies; 0 =
	// the model's automatic budget (esm.Model.AutoTokensPerBatch).
	ToksPerBatch int
	// MaxResidues is the longest wild type accepted; 0 =
	// esm.DefaultMaxResidues (1022: with BOS and EOS, the 1024 positions
	// ESM2 was trained on). Longer wild types are an error, not truncated:
	// a score of a truncated protein would silently ignore its tail.
	MaxResidues int
	// Progress, when set, is called on the caller's goroutine after each
	// batch with the pass (a strategy), the copies of that pass scored so
	// far and its total.
	Progress func(pass Strategy, done, total int64)
}

// Scorer scores variants with a model's masked-LM head. Its methods run on
// the caller's goroutine, which must be the one that owns the model's
// backend; a Scorer is not safe for concurrent use. Close releases it.
type Scorer struct {
	m        *esm.Model
	budget   int
	maxRes   int
	progress func(Strategy, int64, int64)
	tok      *esm.Tokenizer
	fl       [2]flight // batches in rotation: one computes while the other is read
}

// flight is one batch of copies and the output it fills.
type flight struct {
	b     esm.Batch
	out   esm.Output
	ents  []entry
	fence esm.Fence
	busy  bool // launched, fence not yet waited for
}

// entry is one copy in a batch.
type entry struct {
	tag   int // the pass's identifier of the copy's sequence
	pos   int // masked residue (1-based), 0 for none
	start int // first token of the copy in the batch
	n     int // tokens of the copy
}

// New returns a Scorer for m, which needs its LM head.
func New(m *esm.Model, opts Options) (*Scorer, error) {
	if !m.HasLMHead() {
		return nil, errors.New("score: the checkpoint has no LM head (lm_head.*): variant scores need the masked-LM logits")
	}
	maxRes := opts.MaxResidues
	if maxRes == 0 {
		maxRes = esm.DefaultMaxResidues
	}
	if maxRes < 0 {
		return nil, fmt.Errorf("score: MaxResidues %d < 0", maxRes)
	}
	budget := opts.ToksPerBatch
	if budget == 0 {
		budget = m.AutoTokensPerBatch(maxRes)
	}
	if budget < 3 {
		return nil, fmt.Errorf("score: %d tokens per batch cannot hold a sequence (BOS, a residue, EOS)", budget)
	}
	return &Scorer{m: m, budget: budget, maxRes: maxRes, progress: opts.Progress, tok: esm.NewTokenizer(0)}, nil
}

// ToksPerBatch is the token budget the Scorer packs copies under.
func (s *Scorer) ToksPerBatch() int { return s.budget }

// Close releases the Scorer's output buffers (not the model). Call it on
// the goroutine that owns the model's backend.
func (s *Scorer) Close() error {
	var err error
	for i := range s.fl {
		s.drain(&s.fl[i])
		err = errors.Join(err, s.fl[i].out.Release())
	}
	return err
}

// CheckWildType validates a wild-type sequence and returns it in upper
// case: letters of ResidueLetters only (case-insensitive), at least one,
// at most maxResidues (<= 0: no limit). Errors name the first offending
// character and its 1-based position.
func CheckWildType(seq string, maxResidues int) (string, error) {
	if seq == "" {
		return "", errors.New("empty sequence")
	}
	b := []byte(seq)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
			b[i] = c
		}
		if !isResidue(c) {
			return "", fmt.Errorf("%s at residue %d is not a residue letter (a wild type holds only %s)", describe(seq[i]), i+1, ResidueLetters)
		}
	}
	if maxResidues > 0 && len(b) > maxResidues {
		return "", fmt.Errorf("%d residues, more than the %d scored whole (ESM2 was trained on %d positions; longer proteins are not truncated or windowed)",
			len(b), maxResidues, esm.DefaultMaxResidues+2)
	}
	return string(b), nil
}

// Score computes the strategies strat for every variant of the wild types
// wts (sequences as CheckWildType accepts them). Results are in the order of
// vars.
//
// Work: masked marginals run one masked copy per distinct mutated position
// of each wild type (a scan of L positions is one pass of L copies); wt
// marginals one unmasked copy per wild type; PLL L copies per distinct
// mutant sequence and per wild type. Copies are packed into batches of at
// most ToksPerBatch tokens, and a batch computes while the previous one is
// read.
func (s *Scorer) Score(ctx context.Context, wts []string, vars []Variant, strat Strategy) ([]Result, error) {
	if strat == 0 || strat&^AllStrategies != 0 {
		return nil, fmt.Errorf("score: invalid strategy set %d", strat)
	}
	seqs := make([]string, len(wts))
	toks := make([][]int32, len(wts))
	for i, w := range wts {
		seq, err := CheckWildType(w, s.maxRes)
		if err != nil {
			return nil, fmt.Errorf("score: wild type %d: %w", i, err)
		}
		seqs[i] = seq
		t, _, err := s.tok.Encode(nil, []byte(seq))
		if err != nil { // cannot happen for a checked sequence
			return nil, fmt.Errorf("score: wild type %d: %w", i, err)
		}
		if len(t) > s.budget {
			return nil, fmt.Errorf("score: wild type %d: %d residues plus BOS/EOS do not fit the %d tokens per batch", i, len(seq), s.budget)
		}
		toks[i] = t
	}
	for i, v := range vars {
		if v.WildType < 0 || v.WildType >= len(wts) {
			return nil, fmt.Errorf("score: variant %d names wild type %d of %d", i, v.WildType, len(wts))
		}
		if len(v.Mutant) == 0 {
			return nil, fmt.Errorf("score: variant %d has no substitutions", i)
		}
		if err := v.Mutant.Check(seqs[v.WildType], 1); err != nil {
			return nil, fmt.Errorf("score: variant %d: %w", i, err)
		}
	}
	res := make([]Result, len(vars))
	nan := math.NaN()
	for i := range res {
		res[i] = Result{nan, nan, nan, nan}
	}
	// subs[w] lists (position, variant, substitution) of wild type w in
	// position order: the marginal passes add each copy's terms to the
	// variants that change that position.
	subs := make([][]siteRef, len(wts))
	if strat&(MaskedMarginals|WTMarginals) != 0 {
		for i, v := range vars {
			for j, sub := range v.Mutant {
				subs[v.WildType] = append(subs[v.WildType], siteRef{pos: sub.Pos, variant: i, sub: j})
			}
		}
		for w := range subs {
			slices.SortStableFunc(subs[w], func(a, b siteRef) int { return a.pos - b.pos })
		}
	}
	if strat.Has(MaskedMarginals) {
		if err := s.maskedMarginals(ctx, toks, subs, vars, res); err != nil {
			return nil, err
		}
	}
	if strat.Has(WTMarginals) {
		if err := s.wtMarginals(ctx, toks, subs, vars, res); err != nil {
			return nil, err
		}
	}
	if strat.Has(PLL) {
		if err := s.pll(ctx, toks, vars, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// siteRef is one substitution of one variant, found by its position.
type siteRef struct {
	pos, variant, sub int
}

// maskedMarginals runs one masked copy per distinct mutated position of
// each wild type and adds log p(mt) - log p(wt) there to each variant that
// changes it.
func (s *Scorer) maskedMarginals(ctx context.Context, toks [][]int32, subs [][]siteRef, vars []Variant, res []Result) error {
	var total int64
	for _, refs := range subs {
		for k := range refs {
			if k == 0 || refs[k].pos != refs[k-1].pos {
				total++
			}
		}
	}
	for i := range res {
		res[i].MaskedMarginals = 0
	}
	w, k := 0, 0 // next wild type and index into subs[w]
	next := func() ([]int32, int, int, bool) {
		for w < len(subs) && k >= len(subs[w]) {
			w, k = w+1, 0
		}
		if w >= len(subs) {
			return nil, 0, 0, false
		}
		pos := subs[w][k].pos
		for k < len(subs[w]) && subs[w][k].pos == pos {
			k++
		}
		return toks[w], pos, w, true
	}
	lp := make([]float64, s.m.Cfg.Vocab)
	return s.pass(ctx, MaskedMarginals, total, next, func(e entry, logits []float32) error {
		refs := subs[e.tag]
		V := s.m.Cfg.Vocab
		if !logSoftmax(lp, logits[e.pos*V:(e.pos+1)*V]) {
			return nonFinite(e.tag, e.pos, "its copy with the residue masked")
		}
		i, _ := slices.BinarySearchFunc(refs, e.pos, func(r siteRef, p int) int { return r.pos - p })
		for ; i < len(refs) && refs[i].pos == e.pos; i++ {
			sub := vars[refs[i].variant].Mutant[refs[i].sub]
			res[refs[i].variant].MaskedMarginals += lp[tokenOf(sub.MT)] - lp[tokenOf(sub.WT)]
		}
		return nil
	})
}

// wtMarginals runs each wild type once, unmasked, and adds
// log p(mt) - log p(wt) at each substitution's position.
func (s *Scorer) wtMarginals(ctx context.Context, toks [][]int32, subs [][]siteRef, vars []Variant, res []Result) error {
	for i := range res {
		res[i].WTMarginals = 0
	}
	var total int64
	for _, refs := range subs {
		if len(refs) > 0 {
			total++
		}
	}
	w := 0
	next := func() ([]int32, int, int, bool) {
		for w < len(subs) && len(subs[w]) == 0 {
			w++
		}
		if w >= len(subs) {
			return nil, 0, 0, false
		}
		w++
		return toks[w-1], 0, w - 1, true
	}
	lp := make([]float64, s.m.Cfg.Vocab)
	V := s.m.Cfg.Vocab
	return s.pass(ctx, WTMarginals, total, next, func(e entry, logits []float32) error {
		last := -1
		for _, r := range subs[e.tag] {
			if r.pos != last {
				if !logSoftmax(lp, logits[r.pos*V:(r.pos+1)*V]) {
					return nonFinite(e.tag, r.pos, "the wild type, unmasked")
				}
				last = r.pos
			}
			sub := vars[r.variant].Mutant[r.sub]
			res[r.variant].WTMarginals += lp[tokenOf(sub.MT)] - lp[tokenOf(sub.WT)]
		}
		return nil
	})
}

// pll computes the pseudo-log-likelihood of each wild type that has
// variants and of each distinct mutant sequence, L masked copies each.
func (s *Scorer) pll(ctx context.Context, toks [][]int32, vars []Variant, res []Result) error {
	// Sequences: per wild type, itself first, then its distinct mutants.
	type pseq struct {
		w int
		m Mutant // nil: the wild type
	}
	var seqs []pseq
	wtSeq := make([]int, len(toks)) // wild type -> index in seqs, -1 when unused
	for i := range wtSeq {
		wtSeq[i] = -1
	}
	of := make([]int, len(vars)) // variant -> index in seqs
	type seqKey struct {
		w int
		k string
	}
	keys := map[seqKey]int{}
	byWT := make([][]int, len(toks))
	for i, v := range vars {
		byWT[v.WildType] = append(byWT[v.WildType], i)
	}
	for w, idx := range byWT {
		if len(idx) == 0 {
			continue
		}
		wtSeq[w] = len(seqs)
		seqs = append(seqs, pseq{w: w})
		for _, i := range idx {
			k := vars[i].Mutant.key()
			if k == "" { // synonymous only: the wild type's sequence
				of[i] = wtSeq[w]
				continue
			}
			id, ok := keys[seqKey{w, k}]
			if !ok {
				id = len(seqs)
				keys[seqKey{w, k}] = id
				seqs = append(seqs, pseq{w: w, m: vars[i].Mutant})
			}
			of[i] = id
		}
	}
	var total int64
	for _, q := range seqs {
		total += int64(len(toks[q.w]) - 2)
	}
	sums := make([]float64, len(seqs))
	cur := make([]int32, 0, s.maxRes+2)
	q, pos := 0, 0 // next sequence, and its last residue handed out
	next := func() ([]int32, int, int, bool) {
		if q < len(seqs) && pos == len(toks[seqs[q].w])-2 {
			q, pos = q+1, 0
		}
		if q >= len(seqs) {
			return nil, 0, 0, false
		}
		if pos == 0 {
			cur = append(cur[:0], toks[seqs[q].w]...)
			for _, sub := range seqs[q].m {
				cur[sub.Pos] = tokenOf(sub.MT)
			}
		}
		pos++
		return cur, pos, q, true
	}
	lp := make([]float64, s.m.Cfg.Vocab)
	V := s.m.Cfg.Vocab
	err := s.pass(ctx, PLL, total, next, func(e entry, logits []float32) error {
		q := seqs[e.tag]
		if !logSoftmax(lp, logits[e.pos*V:(e.pos+1)*V]) {
			what := "the wild type with the residue masked"
			if q.m != nil {
				what = "mutant " + q.m.Format(1) + " with the residue masked"
			}
			return nonFinite(q.w, e.pos, what)
		}
		truth := toks[q.w][e.pos]
		for _, sub := range q.m {
			if sub.Pos == e.pos {
				truth = tokenOf(sub.MT)
			}
		}
		sums[e.tag] += lp[truth]
		return nil
	})
	if err != nil {
		return err
	}
	for i, v := range vars {
		res[i].PLLMutant = sums[of[i]]
		res[i].PLL = sums[of[i]] - sums[wtSeq[v.WildType]]
	}
	return nil
}

// tokenOf is the token id of a residue letter (isResidue).
func tokenOf(c byte) int32 { return residueToken[c] }

var residueToken = func() (t [256]int32) {
	for id := 4; id <= 30; id++ {
		t[esm.Tokens[id][0]] = int32(id)
	}
	return t
}()

// ErrNonFinite is returned (wrapped) when the model's logits hold NaN or
// ±Inf: no score is made of them.
var ErrNonFinite = errors.New("the model's logits are not finite (NaN or ±Inf): a damaged checkpoint, or an overflow in fp16/bf16 (try --precision fp32)")

// NonFiniteError says where the logits were not finite: wild type
// WildType (an index into Score's wild types), at residue Residue
// (1-based), in the copy What describes. It wraps ErrNonFinite.
type NonFiniteError struct {
	WildType, Residue int
	What              string
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("score: wild type %d, residue %d (%s): %v", e.WildType, e.Residue, e.What, ErrNonFinite)
}

func (e *NonFiniteError) Unwrap() error { return ErrNonFinite }

func nonFinite(w, pos int, what string) error {
	return &NonFiniteError{WildType: w, Residue: pos, What: what}
}

// logSoftmax writes the log-softmax of logits (float32) into dst, in
// float64, and reports whether every logit was finite (if not, dst is not
// to be used).
func logSoftmax(dst []float64, logits []float32) bool {
	mx := math.Inf(-1)
	for _, v := range logits {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
		mx = math.Max(mx, f)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	for i, v := range logits {
		dst[i] = float64(v) - lse
	}
	return true
}

// pass runs copies through the model, packed into batches of at most
// s.budget tokens, two batches in flight: next yields each copy in order
// (its sequence's tokens with BOS/EOS, unmasked; the residue to mask,
// 1-based, or 0; a tag for visit) and may reuse the tokens' memory after
// the following call; visit gets each copy with its (n, V) logits, in the
// order next gave them.
func (s *Scorer) pass(ctx context.Context, which Strategy, total int64, next func() ([]int32, int, int, bool), visit func(entry, []float32) error) (err error) {
	defer func() {
		for i := range s.fl {
			s.drain(&s.fl[i])
		}
	}()
	var (
		carry     []int32 // a copy that did not fit the previous batch
		carryPos  int
		carryTag  int
		haveCarry bool
		done      int64
		prev      = -1
		cur       = 0
		V         = s.m.Cfg.Vocab
		finished  bool
	)
	consume := func(f *flight) error {
		f.busy = false
		if err := f.fence.Wait(); err != nil {
			return fmt.Errorf("score: forward: %w", err)
		}
		for _, e := range f.ents {
			if err := visit(e, f.out.Logits[e.start*V:(e.start+e.n)*V]); err != nil {
				return err
			}
		}
		done += int64(len(f.ents))
		if s.progress != nil {
			s.progress(which, done, total)
		}
		return nil
	}
	add := func(f *flight, toks []int32, pos, tag int) {
		start := len(f.b.Tokens)
		masks := 0
		if pos > 0 {
			masks = 1
		}
		f.b.Append(toks, masks)
		if pos > 0 {
			f.b.Tokens[start+pos] = esm.TokMask
		}
		f.ents = append(f.ents, entry{tag: tag, pos: pos, start: start, n: len(toks)})
	}
	for !finished {
		if err := ctx.Err(); err != nil {
			return err
		}
		f := &s.fl[cur]
		f.b.Reset()
		f.ents = f.ents[:0]
		if haveCarry {
			add(f, carry, carryPos, carryTag)
			haveCarry = false
		}
		for {
			toks, pos, tag, ok := next()
			if !ok {
				finished = true
				break
			}
			if len(toks) > s.budget {
				return fmt.Errorf("score: a copy of %d tokens does not fit the %d tokens per batch", len(toks), s.budget)
			}
			if len(f.b.Tokens)+len(toks) > s.budget {
				carry = append(carry[:0], toks...)
				carryPos, carryTag, haveCarry = pos, tag, true
				break
			}
			add(f, toks, pos, tag)
		}
		if len(f.ents) > 0 {
			fence, err := s.m.Launch(&f.b, esm.Request{Logits: true}, &f.out)
			if err != nil {
				return fmt.Errorf("score: batch of %d copies, %d tokens: %w", len(f.ents), len(f.b.Tokens), err)
			}
			f.fence, f.busy = fence, true
		}
		if prev >= 0 {
			if err := consume(&s.fl[prev]); err != nil {
				return err
			}
			prev = -1
		}
		if len(f.ents) > 0 {
			prev, cur = cur, 1-cur
		}
	}
	if prev >= 0 {
		return consume(&s.fl[prev])
	}
	return nil
}

// drain waits for a flight still in flight (after an error), so that no
// copy into its output is pending.
func (s *Scorer) drain(f *flight) {
	if f.busy {
		f.busy = false
		_ = f.fence.Wait() // the error that stopped the pass is reported instead
	}
}
