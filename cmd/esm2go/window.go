package main

import (
	"errors"
	"fmt"

	"github.com/esm2go/esm2go/embed"
	"github.com/spf13/pflag"
)

// addWindowFlags adds the long-protein window flags to embed's flag set
// (the policy is embed.Windowing's; docs/LONG_PROTEINS.md explains it).
func addWindowFlags(fs *pflag.FlagSet, f *embedFlags) {
	fs.IntVar(&f.window, "window", 0, "embed sequences longer than N residues in overlapping windows of N (e.g. 1022) instead of truncating them: per-residue rows averaged where windows overlap, mean over the whole protein; 0 = off (see docs/LONG_PROTEINS.md)")
	fs.IntVar(&f.windowOverlap, "window-overlap", -1, "residues shared by consecutive windows (0 <= K < --window); -1 = a quarter of --window")
}

// windowPolicy checks the window flags against the others and returns the
// policy. With windows, the whole protein is embedded: f.truncation becomes
// -1 (an explicit positive --truncation-seq-length contradicts --window).
func windowPolicy(f *embedFlags, truncationGiven bool) (embed.Windowing, error) {
	if f.window == 0 {
		if f.windowOverlap != -1 {
			return embed.Windowing{}, errors.New("--window-overlap needs --window")
		}
		return embed.Windowing{}, nil
	}
	if f.window < 0 {
		return embed.Windowing{}, fmt.Errorf("invalid --window %d (want residues per window > 0, or 0 for none)", f.window)
	}
	w := embed.Windowing{Size: f.window, Overlap: f.windowOverlap}
	if w.Overlap == -1 {
		w.Overlap = w.Size / 4
	}
	if err := w.Validate(); err != nil {
		return embed.Windowing{}, fmt.Errorf("--window %d --window-overlap %d: %w", f.window, f.windowOverlap, err)
	}
	if truncationGiven && f.truncation != -1 {
		return embed.Windowing{}, fmt.Errorf("--window and --truncation-seq-length %d are exclusive: windows embed the whole protein (drop --truncation-seq-length)", f.truncation)
	}
	if f.toks > 0 && f.toks < w.Size+2 {
		return embed.Windowing{}, fmt.Errorf("--toks-per-batch %d cannot hold one window of %d residues plus BOS/EOS", f.toks, w.Size)
	}
	f.truncation = -1
	return w, nil
}
