package weights

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"

	"github.com/esm2go/esm2go/internal/ctxio"
)

// Fingerprint identifies the checkpoint's files (config and weights),
// in name order, by content: a file of the Hugging Face cache is a symlink
// to a blob named by its git SHA-1 or SHA-256, which is used as it is (no
// read: a 15B checkpoint is 60 GB); any other file is hashed (xxhash64, a
// few goroutines; several GB/s from the page cache). Fingerprints cover
// values, so a fine-tuned copy with the same shapes is a different model.
// Hashing stops when ctx ends.
func Fingerprint(ctx context.Context, path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	files := []string{path}
	if info.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return "", err
		}
		files = files[:0]
		for _, e := range ents {
			n := e.Name()
			if n == "config.json" || filepath.Ext(n) == ".safetensors" || n == "model.safetensors.index.json" {
				files = append(files, filepath.Join(path, n))
			}
		}
		slices.Sort(files)
	}
	sums := make([]string, len(files))
	var g errgroup.Group
	g.SetLimit(4)
	for i, name := range files {
		if blob := cacheBlob(name); blob != "" {
			sums[i] = "blob:" + blob
			continue
		}
		g.Go(func() error {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			h := xxhash.New()
			if _, err := io.Copy(h, ctxio.Reader(ctx, f)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			sums[i] = fmt.Sprintf("xxh64:%016x", h.Sum64())
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", fmt.Errorf("fingerprinting the model: %w", err)
	}
	h := xxhash.New()
	for i, name := range files {
		fmt.Fprintf(h, "%s %s\n", filepath.Base(name), sums[i])
	}
	return "xxh64:" + hex.EncodeToString(h.Sum(nil)), nil
}

// cacheBlob returns the content hash a Hugging Face cache symlink points
// to (blobs/<40 or 64 hex digits>), or "".
func cacheBlob(name string) string {
	target, err := os.Readlink(name)
	if err != nil {
		return ""
	}
	b := filepath.Base(target)
	if filepath.Base(filepath.Dir(target)) != "blobs" || (len(b) != 40 && len(b) != 64) {
		return ""
	}
	if _, err := hex.DecodeString(b); err != nil {
		return ""
	}
	return b
}
