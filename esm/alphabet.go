package esm

import (
	"fmt"
)

// The ESM-1b/ESM2 alphabet (33 tokens), in fair-esm's order.
const (
	TokCLS  int32 = 0 // <cls>, prepended to every sequence (BOS)
	TokPad  int32 = 1 // <pad>
	TokEOS  int32 = 2 // <eos>, appended to every sequence
	TokUnk  int32 = 3 // <unk>
	TokMask int32 = 32
	// VocabSize is the alphabet size.
	VocabSize = 33
)

// Tokens lists the alphabet; the index is the token id.
var Tokens = [VocabSize]string{
	"<cls>", "<pad>", "<eos>", "<unk>",
	"L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
	"<null_1>", "<mask>",
}

// DefaultMaxResidues is fair-esm's truncation: 1022 residues plus BOS and EOS
// make the 1024 positions ESM2 was trained on.
const DefaultMaxResidues = 1022

// Tokenizer policy (applied by Encode, documented for users in the README):
//
//   - Letters are case-insensitive: "m" is "M".
//   - Trailing '*' characters (a translated stop codon) are dropped.
//   - The 25 residue letters of the alphabet (LAGVSERTIDPKQNFYMHWCXBUZO) and
//     the gap characters '.' and '-' map to their tokens.
//   - Any other ASCII letter (only J: Leu/Ile) maps to <unk>, one token per
//     letter so per-residue outputs stay aligned with the input; it is
//     counted in Encoded.Unknown.
//   - The literal tokens "<mask>" and "<unk>" inside a sequence are one token
//     each (fair-esm and HF do the same), in any case ("<MASK>", "<Mask>"),
//     as letters are.
//   - Anything else (digits, '*' before the end, other punctuation, non-ASCII
//     or control bytes) makes the record unembeddable: an error naming the
//     character and its position. Whitespace never reaches the tokenizer (the
//     FASTA reader removes it).
//   - A sequence with no residues left is an error.
//   - Truncation keeps the first MaxResidues residue tokens, then BOS and EOS
//     are added (fair-esm's rule).

const (
	classInvalid int8 = -1
	classSpecial int8 = -2 // '<': start of <mask> or <unk>
)

// Tokenizer maps residue bytes to token ids through a 256-entry table. It is
// immutable after NewTokenizer and safe for concurrent use.
type Tokenizer struct {
	table       [256]int8
	MaxResidues int // truncation; <= 0 means no truncation
}

// NewTokenizer builds the byte table. maxResidues <= 0 disables truncation.
func NewTokenizer(maxResidues int) *Tokenizer {
	t := &Tokenizer{MaxResidues: maxResidues}
	for i := range t.table {
		t.table[i] = classInvalid
	}
	for id := 4; id <= 30; id++ {
		c := Tokens[id][0]
		t.table[c] = int8(id)
		if c >= 'A' && c <= 'Z' {
			t.table[c+'a'-'A'] = int8(id)
		}
	}
	t.table['J'], t.table['j'] = int8(TokUnk), int8(TokUnk)
	t.table['<'] = classSpecial
	return t
}

// Encoded describes one tokenized sequence.
type Encoded struct {
	Residues  int  // residue tokens in the input (before truncation)
	Kept      int  // residue tokens kept (the sequence has Kept+2 tokens)
	Truncated bool // Kept < Residues
	Unknown   int  // letters mapped to <unk> by the policy
	Masks     int  // <mask> tokens kept
}

// Encode appends <cls>, the residue tokens (truncated) and <eos> to dst.
// On error dst is returned unchanged in length.
func (t *Tokenizer) Encode(dst []int32, seq []byte) ([]int32, Encoded, error) {
	var e Encoded
	end := len(seq)
	for end > 0 && seq[end-1] == '*' {
		end--
	}
	seq = seq[:end]
	base := len(dst)
	dst = append(dst, TokCLS)
	for i := 0; i < len(seq); i++ {
		c := seq[i]
		id := t.table[c]
		switch {
		case id >= 0:
		case id == classSpecial:
			switch {
			case hasPrefix(seq[i:], "<mask>"):
				id, i = int8(TokMask), i+len("<mask>")-1
			case hasPrefix(seq[i:], "<unk>"):
				id, i = int8(TokUnk), i+len("<unk>")-1
			default:
				return dst[:base], Encoded{}, fmt.Errorf("unexpected '<' at residue %d (only <mask> and <unk> are accepted)", i+1)
			}
		case hasPrefix(seq[i:], "\xef\xbb\xbf"):
			return dst[:base], Encoded{}, fmt.Errorf("a UTF-8 byte order mark at residue %d: a file's start inside this record (files joined with cat?), so the record after it is in this one's sequence; remove the mark", i+1)
		default:
			return dst[:base], Encoded{}, fmt.Errorf("invalid character %s at residue %d", describeByte(c), i+1)
		}
		e.Residues++
		if c == 'J' || c == 'j' {
			e.Unknown++
		}
		if t.MaxResidues > 0 && e.Kept >= t.MaxResidues {
			continue // keep scanning: the whole record must be valid
		}
		e.Kept++
		if int32(id) == TokMask {
			e.Masks++
		}
		dst = append(dst, int32(id))
	}
	if e.Residues == 0 {
		return dst[:base], Encoded{}, fmt.Errorf("no residues")
	}
	e.Truncated = e.Kept < e.Residues
	return append(dst, TokEOS), e, nil
}

// hasPrefix reports whether b starts with s, ignoring ASCII case.
func hasPrefix(b []byte, s string) bool {
	if len(b) < len(s) {
		return false
	}
	for i := 0; i < len(s); i++ { // s is lower case
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func describeByte(c byte) string {
	if c >= 0x21 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// TokenDropoutScale is ESM2's embedding rescale for one sequence of n tokens
// (BOS and EOS included) holding masks <mask> tokens: the model was trained
// with 15%*80% of tokens masked, so unmasked inference multiplies by
// (1-0.12)/(1-masks/n).
func TokenDropoutScale(masks, n int) float32 {
	const maskRatioTrain = 0.15 * 0.8
	observed := float32(masks) / float32(n)
	return (1 - maskRatioTrain) / (1 - observed)
}
