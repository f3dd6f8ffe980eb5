package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/esm2go/esm2go/internal/testutil"
)

// A model missing from the caches is downloaded from the hub (here a local
// server that speaks the hub's protocol and serves the committed tiny
// fixture), checked, put in the HF cache layout, and used; a second run
// finds it in the cache with the server gone.
func TestEmbedDownloadsModel(t *testing.T) {
	const commit = "89abcdef0123456789abcdef0123456789abcdef"
	hub, gets := testutil.FakeHub(t, "test-org/esm2_tiny", commit, tinyModel)
	home := t.TempDir()
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_TOKEN", "")
	t.Setenv("TORCH_HOME", filepath.Join(home, "torch"))
	t.Setenv("HF_ENDPOINT", hub.URL)

	out := filepath.Join(t.TempDir(), "emb.parquet")
	code, _, stderr := runCLI(t, "embed", "--model", "test-org/esm2_tiny", "--device", "cpu", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("embed with download: status %d\n%s", code, stderr)
	}
	if gets.Load() != 2 {
		t.Fatalf("%d files downloaded, want 2", gets.Load())
	}
	snap := filepath.Join(home, "hub", "models--test-org--esm2_tiny", "snapshots", commit, "model.safetensors")
	want, err := os.ReadFile(filepath.Join(tinyModel, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(snap); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("cache snapshot %s: %v", snap, err)
	}
	hub.Close() // the second run must not need the network
	code, _, stderr = runCLI(t, "embed", "--model", "test-org/esm2_tiny", "--device", "cpu", "--overwrite", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("embed from the cache: status %d\n%s", code, stderr)
	}
}
