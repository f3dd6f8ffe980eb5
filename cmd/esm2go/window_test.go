package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/embed"
	"github.com/esm2go/esm2go/output"
)

// Contradictory or invalid window flags are refused before the model
// loads, with the flag named.
func TestWindowFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--window-overlap", "10"}, "--window-overlap needs --window"},
		{[]string{"--window", "100", "--truncation-seq-length", "500"}, "exclusive"},
		{[]string{"--window", "100", "--truncation-seq-length", "1022"}, "exclusive"},
		{[]string{"--window", "100", "--window-overlap", "100"}, "want 0 <= overlap < window 100"},
		{[]string{"--window", "100", "--window-overlap", "-3"}, "want 0 <= overlap"},
		{[]string{"--window", "-5"}, "invalid --window -5"},
		{[]string{"--window", "100", "--toks-per-batch", "50"}, "cannot hold one window of 100 residues"},
	} {
		out := filepath.Join(dir, "x.parquet")
		args := append([]string{"embed", "--model", "no-such-model-dir", "--out", out}, c.args...)
		code, _, errs := runCLI(t, append(args, fasta)...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: status %d, stderr %q; want %q", c.args, code, errs, c.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v: an output was written", c.args)
		}
	}
}

// --window embeds a long record whole (not truncated) in windows and
// records the policy in the output's metadata.
func TestWindowEmbed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	long := strings.Repeat("MKVLAGDEFH", 30) // 300 residues
	in := filepath.Join(dir, "in.fasta")
	if err := os.WriteFile(in, []byte(">short\nMKVLA\n>long\n"+long+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "emb") + "/"
	code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out, "--include", "mean,per_tok",
		"--window", "100", "--window-overlap", "20", "--truncation-seq-length", "-1", in)
	if code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	if strings.Contains(errs, "truncation disabled") {
		t.Errorf("windows warned about disabled truncation:\n%s", errs)
	}
	rd, err := output.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	meta := rd.Schema().Metadata
	if meta[embed.MetaWindow] != "100" || meta[embed.MetaWindowOverlap] != "20" || meta["truncation_seq_length"] != "none" {
		t.Errorf("metadata %v", meta)
	}
	if got := npyShape(t, filepath.Join(out, "per_tok_3.npy")); got != [2]int{305, 64} {
		t.Errorf("per_tok shape %v, want [305 64] (no residue dropped)", got)
	}
	// The default overlap is a quarter of the window.
	out2 := filepath.Join(dir, "emb2") + "/"
	if code, _, errs := runCLI(t, "embed", "--model", tinyModel, "--device", "cpu", "--out", out2, "--window", "100", in); code != 0 {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
	rd2, err := output.Open(out2)
	if err != nil {
		t.Fatal(err)
	}
	defer rd2.Close()
	if ov := rd2.Schema().Metadata[embed.MetaWindowOverlap]; ov != "25" {
		t.Errorf("default overlap %q, want 25", ov)
	}
}
