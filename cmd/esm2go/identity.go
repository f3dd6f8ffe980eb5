package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"
)

// The identity of a run is what a later run must match to resume its
// committed rows (output.PartsOptions.Identity): the model's weights, every
// option that changes values, and the input.

// modelFingerprint hashes the checkpoint's files (config and weights):
// xxhash64 of each file's bytes, files in name order, read on a few
// goroutines. Weights already in the page cache hash at several GB/s, so a
// 650M checkpoint costs well under a second; fingerprints cover values, so a
// fine-tuned copy with the same shapes is a different model.
func modelFingerprint(path string) (string, error) {
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
	sums := make([]uint64, len(files))
	var g errgroup.Group
	g.SetLimit(4)
	for i, name := range files {
		g.Go(func() error {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			h := xxhash.New()
			if _, err := io.Copy(h, f); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			sums[i] = h.Sum64()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", fmt.Errorf("fingerprinting the model: %w", err)
	}
	h := xxhash.New()
	for i, name := range files {
		fmt.Fprintf(h, "%s %016x\n", filepath.Base(name), sums[i])
	}
	return "xxh64:" + hex.EncodeToString(h.Sum(nil)), nil
}

// inputFingerprint names the inputs by absolute path, size and
// modification time: cheap for inputs of hundreds of GB, and any edit,
// replacement or reordering of the inputs changes it. Standard input has no
// identity: a run reading it cannot be resumed (an empty result says so).
func inputFingerprint(inputs []string) (string, bool) {
	h := xxhash.New()
	for _, in := range inputs {
		if in == "-" {
			return "", false
		}
		abs, err := filepath.Abs(in)
		if err != nil {
			abs = in
		}
		st, err := os.Stat(in)
		if err != nil {
			return "", false
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", abs, st.Size(), st.ModTime().UnixNano())
	}
	return "xxh64:" + strconv.FormatUint(h.Sum64(), 16), true
}
