package score

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Substitution is one amino-acid change of a wild type.
type Substitution struct {
	Pos int  // 1-based residue index into the wild-type sequence (after the offset)
	WT  byte // the wild-type letter the mutation names (upper case)
	MT  byte // the letter it becomes (upper case)
}

// Mutant is one variant: one or more substitutions at distinct positions,
// in the order they were written.
type Mutant []Substitution

// MaxSubstitutions caps the substitutions of one mutant (a multi-mutant
// string is split on ':'): more than any DMS writes, and it bounds the work
// one table cell can ask for.
const MaxSubstitutions = 1024

// MaxOffset bounds the numbering offset (ParseMutant) either way.
const MaxOffset = 1_000_000_000

// maxPosDigits bounds a position's digits, so that it fits an int with room
// for the offset.
const maxPosDigits = 9

// ResidueLetters are the letters a substitution may name: the 25 residue
// tokens of the ESM alphabet (the 20 standard amino acids, X, B, U, Z, O).
const ResidueLetters = "LAGVSERTIDPKQNFYMHWCXBUZO"

// StandardResidues are the 20 standard amino acids, in alphabetical order of
// their one-letter codes: the letters a scan substitutes at every position.
const StandardResidues = "ACDEFGHIKLMNPQRSTVWY"

func isResidue(c byte) bool { return c >= 'A' && c <= 'Z' && strings.IndexByte(ResidueLetters, c) >= 0 }

// ParseMutant reads a mutant written the way deep mutational scans write
// them: "A23G" (wild-type letter, position, mutant letter) or several such
// joined by ':' ("A23G:K45R"). offset is the number the first residue of
// the wild-type sequence carries in that numbering (1 when positions count
// from the sequence's first residue; fair-esm's predict.py calls it
// --offset-idx). The returned positions are 1-based indices into the
// sequence: number - offset + 1.
//
// The syntax is strict: upper-case letters of ResidueLetters, a decimal
// position without sign, spaces or leading zeros, nothing else; the same
// position may not appear twice. A substitution of a letter by itself
// ("A23A") is accepted and scores 0.
func ParseMutant(s string, offset int) (Mutant, error) {
	if s == "" {
		return nil, errors.New("empty mutant")
	}
	if offset < -MaxOffset || offset > MaxOffset {
		return nil, fmt.Errorf("offset %d outside -%d..%d", offset, MaxOffset, MaxOffset)
	}
	if n := strings.Count(s, ":") + 1; n > MaxSubstitutions {
		return nil, fmt.Errorf("mutant %s has %d substitutions, more than %d", quote(s), n, MaxSubstitutions)
	}
	var m Mutant
	for part := range strings.SplitSeq(s, ":") {
		sub, err := parseSubstitution(part, offset)
		if err != nil {
			if len(part) == len(s) {
				return nil, err
			}
			return nil, fmt.Errorf("mutant %s: %w", quote(s), err)
		}
		for _, o := range m {
			if o.Pos == sub.Pos {
				return nil, fmt.Errorf("mutant %s changes position %d twice", quote(s), sub.Pos+offset-1)
			}
		}
		m = append(m, sub)
	}
	return m, nil
}

func parseSubstitution(s string, offset int) (Substitution, error) {
	if s == "" {
		return Substitution{}, errors.New("empty substitution (two ':' in a row, or one at an end)")
	}
	if len(s) < 3 {
		return Substitution{}, fmt.Errorf("substitution %s is too short (want e.g. A23G)", quote(s))
	}
	wt, digits, mt := s[0], s[1:len(s)-1], s[len(s)-1]
	for _, c := range []byte{wt, mt} {
		if !isResidue(c) {
			return Substitution{}, fmt.Errorf("substitution %s: %s is not a residue letter (want one of %s, upper case)", quote(s), describe(c), ResidueLetters)
		}
	}
	if len(digits) > maxPosDigits {
		return Substitution{}, fmt.Errorf("substitution %s: position has more than %d digits", quote(s), maxPosDigits)
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return Substitution{}, fmt.Errorf("substitution %s: position %s is not a number (want e.g. A23G)", quote(s), quote(digits))
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return Substitution{}, fmt.Errorf("substitution %s: position %s has a leading zero", quote(s), digits)
	}
	n, err := strconv.Atoi(digits)
	if err != nil { // cannot happen after the checks above; kept as a guard
		return Substitution{}, fmt.Errorf("substitution %s: %w", quote(s), err)
	}
	pos := n - offset + 1
	if pos < 1 {
		return Substitution{}, fmt.Errorf("substitution %s: position %d is before the first residue (numbered %d)", quote(s), n, offset)
	}
	return Substitution{Pos: pos, WT: wt, MT: mt}, nil
}

// Check verifies m against a wild-type sequence (upper case): every
// position lies inside it and names the letter it has there, every mutant
// letter is a residue letter (as ParseMutant requires; a hand-built
// Substitution may hold anything), and no position is changed twice.
// Errors name the substitution in its own numbering (offset as given to
// ParseMutant).
func (m Mutant) Check(seq string, offset int) error {
	for i, s := range m {
		if !isResidue(s.MT) {
			return fmt.Errorf("%s: the mutant letter %s is not a residue letter (want one of %s, upper case)", s.Format(offset), describe(s.MT), ResidueLetters)
		}
		for _, p := range m[:i] {
			if p.Pos == s.Pos {
				return fmt.Errorf("mutant %s changes position %d twice", m.Format(offset), s.Pos+offset-1)
			}
		}
		if s.Pos < 1 || s.Pos > len(seq) {
			return fmt.Errorf("%s: position %d is past the end of the wild type (%d residues, numbered %d..%d)",
				s.Format(offset), s.Pos+offset-1, len(seq), offset, len(seq)+offset-1)
		}
		if got := seq[s.Pos-1]; got != s.WT {
			return fmt.Errorf("%s: the wild type has %c at position %d, not %c", s.Format(offset), got, s.Pos+offset-1, s.WT)
		}
	}
	return nil
}

// Apply returns seq with m's substitutions made; m must have passed Check.
func (m Mutant) Apply(seq string) string {
	b := []byte(seq)
	for _, s := range m {
		b[s.Pos-1] = s.MT
	}
	return string(b)
}

// Format writes s in the numbering of offset: "A23G".
func (s Substitution) Format(offset int) string {
	return fmt.Sprintf("%c%d%c", s.WT, s.Pos+offset-1, s.MT)
}

// Format writes m in the numbering of offset, substitutions joined by ':'.
func (m Mutant) Format(offset int) string {
	parts := make([]string, len(m))
	for i, s := range m {
		parts[i] = s.Format(offset)
	}
	return strings.Join(parts, ":")
}

// key identifies the sequence m makes: its non-synonymous substitutions in
// position order (two mutants with the same key have the same sequence).
func (m Mutant) key() string {
	subs := slices.DeleteFunc(slices.Clone(m), func(s Substitution) bool { return s.WT == s.MT })
	slices.SortFunc(subs, func(a, b Substitution) int { return a.Pos - b.Pos })
	var sb strings.Builder
	for _, s := range subs {
		sb.WriteString(strconv.Itoa(s.Pos))
		sb.WriteByte(s.MT)
	}
	return sb.String()
}

// ScanMutants lists every single substitution of seq: each position (in
// order) by each of the 20 StandardResidues (in that order), the
// wild-type letter included (it scores 0), so the scores fill an L x 20
// matrix.
func ScanMutants(seq string) []Mutant {
	out := make([]Mutant, 0, len(seq)*len(StandardResidues))
	subs := make([]Substitution, len(seq)*len(StandardResidues))
	for i := 0; i < len(seq); i++ {
		for j := 0; j < len(StandardResidues); j++ {
			k := i*len(StandardResidues) + j
			subs[k] = Substitution{Pos: i + 1, WT: seq[i], MT: StandardResidues[j]}
			out = append(out, Mutant(subs[k:k+1:k+1]))
		}
	}
	return out
}

// QuoteBytes is how much of a user string an error quotes.
const QuoteBytes = 200

// quote quotes user text in an error, cut to QuoteBytes bytes.
func quote(s string) string {
	if len(s) > QuoteBytes {
		return strconv.Quote(s[:QuoteBytes]) + "..."
	}
	return strconv.Quote(s)
}

func describe(c byte) string {
	if c >= 0x21 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}
