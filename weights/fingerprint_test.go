package weights

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs")
	snap := filepath.Join(dir, "snapshots", "abc")
	os.MkdirAll(blobs, 0o755)
	os.MkdirAll(snap, 0o755)
	sha := strings.Repeat("ab", 32)
	os.WriteFile(filepath.Join(blobs, sha), []byte("weights"), 0o644)
	os.Symlink(filepath.Join("..", "..", "blobs", sha), filepath.Join(snap, "model.safetensors"))
	os.WriteFile(filepath.Join(snap, "config.json"), []byte("{}"), 0o644)
	a, err := Fingerprint(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	if cacheBlob(filepath.Join(snap, "model.safetensors")) != sha || cacheBlob(filepath.Join(snap, "config.json")) != "" {
		t.Fatal("cache blob not recognised")
	}
	os.WriteFile(filepath.Join(snap, "config.json"), []byte(`{"x":1}`), 0o644)
	if b, _ := Fingerprint(context.Background(), snap); b == a {
		t.Fatal("a changed config.json kept the fingerprint")
	}
}

func TestFingerprintCancel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "model.safetensors"), make([]byte, 1<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Fingerprint(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fingerprint: %v", err)
	}
}
