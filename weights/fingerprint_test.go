package weights

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
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

// The cache gives the same fingerprint without reading the weights again,
// is keyed so that any write to a file re-hashes it, ignores entries it
// cannot parse, never remembers a file changed just now, and never fails a
// fingerprint when it cannot be written.
func TestFingerprintCached(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	model := filepath.Join(dir, "m")
	os.MkdirAll(model, 0o755)
	weightsFile := filepath.Join(model, "model.safetensors")
	os.WriteFile(weightsFile, []byte("weights v1"), 0o644)
	os.WriteFile(filepath.Join(model, "config.json"), []byte("{}"), 0o644)
	ctx := context.Background()
	plain, err := Fingerprint(ctx, model)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")

	// Files written just now are hashed but not remembered.
	if got, err := FingerprintCached(ctx, model, cache); err != nil || got != plain {
		t.Fatalf("cached fingerprint %q, %v; want %q", got, err, plain)
	}
	if ents, _ := os.ReadDir(cache); len(ents) != 0 {
		t.Fatalf("%d cache entries for files changed just now, want none", len(ents))
	}

	// Settled files (settle 0 here) are remembered, one entry each.
	if got, err := fingerprint(ctx, model, cache, 0); err != nil || got != plain {
		t.Fatalf("fingerprint %q, %v; want %q", got, err, plain)
	}
	key, ok := fileKey(weightsFile)
	if !ok {
		t.Fatal("no stat key on this system")
	}
	entry := filepath.Join(cache, key.entryName())
	b, err := os.ReadFile(entry)
	if err != nil || !strings.HasPrefix(string(b), "esm2go-fingerprint-v1 ") {
		t.Fatalf("cache entry %q, %v", b, err)
	}

	// A hit is used as it is: a doctored entry shows through.
	doctored := strings.Replace(string(b), "xxh64:", "xxh64:0", 1)
	os.WriteFile(entry, []byte(doctored), 0o644)
	if got, _ := fingerprint(ctx, model, cache, 0); got == plain {
		t.Fatal("the cache entry was not used")
	}

	// Writing the file changes its key (size, times): hashed again.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(weightsFile, []byte("weights v2"), 0o644)
	plain2, err := Fingerprint(ctx, model)
	if err != nil || plain2 == plain {
		t.Fatalf("fingerprint after a write: %q, %v (before %q)", plain2, err, plain)
	}
	if got, _ := fingerprint(ctx, model, cache, 0); got != plain2 {
		t.Fatalf("cached fingerprint after a write %q, want %q", got, plain2)
	}

	// An entry that does not parse is ignored.
	key, _ = fileKey(weightsFile)
	os.WriteFile(filepath.Join(cache, key.entryName()), []byte("garbage\n"), 0o644)
	if got, _ := fingerprint(ctx, model, cache, 0); got != plain2 {
		t.Fatalf("fingerprint with a corrupt entry %q, want %q", got, plain2)
	}

	// A long path (a line of more than a few hundred bytes) is remembered too.
	deep := filepath.Join(dir, strings.Repeat("d", 200), strings.Repeat("e", 200))
	os.MkdirAll(deep, 0o755)
	os.WriteFile(filepath.Join(deep, "model.safetensors"), []byte("deep weights"), 0o644)
	deepPlain, _ := Fingerprint(ctx, deep)
	fingerprint(ctx, deep, cache, 0)
	dk, _ := fileKey(filepath.Join(deep, "model.safetensors"))
	if _, hit := lookupSum(cache, dk); !hit || deepPlain == "" {
		t.Errorf("a file under a %d-byte path was not remembered", len(deep))
	}

	// An unwritable cache (a file where the folder should be) costs nothing.
	blocked := filepath.Join(dir, "blocked")
	os.WriteFile(blocked, nil, 0o644)
	if got, err := fingerprint(ctx, model, blocked, 0); err != nil || got != plain2 {
		t.Fatalf("fingerprint with an unusable cache %q, %v; want %q", got, err, plain2)
	}
}

// The mapped hash and the streamed one (for files that cannot be mapped)
// agree, empty files included, and both stop when ctx ends.
func TestHashFileMappedAndStreamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := make([]byte, 3<<20+5)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for name, data := range map[string][]byte{"big": big, "empty": nil} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		a, err := hashFile(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hashStream(context.Background(), p)
		if err != nil || a != b {
			t.Errorf("%s: mapped %q, streamed %q (%v)", name, a, b, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hashStream(ctx, filepath.Join(dir, "big")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled stream: %v", err)
	}
}

// hashMapped hashes step by step while the next step's pages are touched on
// another goroutine: the sum must be xxhash64 of the whole slice for every
// size around the step and page boundaries, and a cancelled ctx stops it.
func TestHashMappedSteps(t *testing.T) {
	t.Parallel()
	page := os.Getpagesize()
	data := make([]byte, 5*page+3)
	for i := range data {
		data[i] = byte(i*31 + i>>8)
	}
	for _, step := range []int{1, page - 1, page, 2*page + 5, len(data), len(data) + 1} {
		for _, n := range []int{0, 1, page - 1, page, page + 1, 2*page + 5, len(data)} {
			got, err := hashMapped(context.Background(), data[:n], step)
			if want := xxhash.Sum64(data[:n]); err != nil || got != want {
				t.Errorf("step %d, %d bytes: %016x, %v; want %016x", step, n, got, err, want)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hashMapped(ctx, data, page); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
