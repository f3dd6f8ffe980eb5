package weights

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"

	"github.com/esm2go/esm2go/internal/ctxio"
)

// Fingerprint identifies the checkpoint's files (config and weights),
// in name order, by content: a file of the Hugging Face cache is a symlink
// to a blob named by its git SHA-1 or SHA-256, which is used as it is (no
// read: a 15B checkpoint is 60 GB); any other file is hashed (xxhash64 of
// its bytes, read through a memory map, a few files at once; several GB/s
// from the page cache). Fingerprints cover values, so a fine-tuned copy
// with the same shapes is a different model. Hashing stops when ctx ends.
func Fingerprint(ctx context.Context, path string) (string, error) {
	return FingerprintCached(ctx, path, "")
}

// FingerprintCached is Fingerprint remembering each hashed file's hash in
// cacheDir ("" for none), keyed by its device, inode, size and modification
// and change times: a later run on the unchanged file skips the read (8 s
// for a 30 GB checkpoint). Any write to the file, or its replacement, changes
// the key. A file changed less than fingerprintSettle ago is not
// remembered (a write in the same clock tick could go unseen). The cache is
// best effort: an unreadable or unwritable cacheDir only costs the read.
func FingerprintCached(ctx context.Context, path, cacheDir string) (string, error) {
	return fingerprint(ctx, path, cacheDir, fingerprintSettle)
}

func fingerprint(ctx context.Context, path, cacheDir string, settle time.Duration) (string, error) {
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
			key, ok := fileKey(name)
			if ok {
				if sum, hit := lookupSum(cacheDir, key); hit {
					sums[i] = sum
					return nil
				}
			}
			sum, err := hashFile(ctx, name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			sums[i] = sum
			if ok {
				storeSum(cacheDir, key, sum, settle)
			}
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

// hashFile is "xxh64:" and the xxhash64 of the file's bytes, read through
// a memory map (no copy out of the page cache) in steps that check ctx, or
// streamed through read(2) where the file cannot be mapped (never all of it
// in memory: checkpoints are tens of GB).
func hashFile(ctx context.Context, name string) (string, error) {
	m, err := openMapped(name, false)
	if errors.Is(err, errNoMap) {
		return hashStream(ctx, name)
	}
	if err != nil {
		return "", err
	}
	defer m.close()
	sum, err := hashMapped(ctx, m.data, hashStep)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return fmt.Sprintf("xxh64:%016x", sum), nil
}

// hashStep is how much of a mapped file hashMapped hashes between checks of
// ctx, and how far ahead its pages are faulted in.
const hashStep = 64 << 20

// hashMapped is the xxhash64 of data, a mapped file, step bytes at a time.
// While a step is hashed, a second goroutine touches one byte in every page
// of the next step, so the page faults (the mapping's cost) are taken beside
// the hashing instead of in its way: a 4 GB file in the page cache, on the
// 2-core development machine, 3.9-4.4 GB/s without it, 5.1-5.2 with it,
// xxhash alone 5.4. It waits for that goroutine at every step, so none
// outlives the call (the mapping is unmapped after it returns).
func hashMapped(ctx context.Context, data []byte, step int) (uint64, error) {
	h := xxhash.New()
	page := os.Getpagesize()
	var sink atomic.Uint32 // makes the touching loads observable
	var wg sync.WaitGroup
	for off := 0; off < len(data); off += step {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		end := min(off+step, len(data))
		var touchErr error
		if end < len(data) {
			next := data[end:min(end+step, len(data))]
			wg.Go(func() {
				touchErr = faultGuard(func() {
					var x byte
					for i := 0; i < len(next); i += page {
						x ^= next[i]
					}
					sink.Add(uint32(x))
				})
			})
		}
		err := faultGuard(func() { h.Write(data[off:end]) })
		wg.Wait()
		if err = errors.Join(err, touchErr); err != nil {
			return 0, err
		}
	}
	return h.Sum64(), nil
}

// hashStream is hashFile through read(2).
func hashStream(ctx context.Context, name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := xxhash.New()
	if _, err := io.Copy(h, ctxio.Reader(ctx, f)); err != nil {
		return "", err
	}
	return fmt.Sprintf("xxh64:%016x", h.Sum64()), nil
}

// fingerprintSettle is how long a file must have been unchanged before its
// hash is remembered.
const fingerprintSettle = 2 * time.Second

// statKey is what FingerprintCached's cache compares: where the file is and
// every stat field a write or a replacement changes.
type statKey struct {
	path               string
	dev, ino           uint64
	size, mtime, ctime int64 // bytes; nanoseconds since the epoch
}

func (k statKey) entryName() string {
	return fmt.Sprintf("%016x", xxhash.Sum64String(fmt.Sprintf("%s\x00%d\x00%d", k.path, k.dev, k.ino)))
}

// line is the cache entry for the file with hash sum: the whole key, so an
// entry is used only for the file it was written for, unchanged.
func (k statKey) line(sum string) string {
	return fmt.Sprintf("esm2go-fingerprint-v1 %q %d %d %d %d %d %s\n", k.path, k.dev, k.ino, k.size, k.mtime, k.ctime, sum)
}

// lookupSum returns the remembered hash of the file key describes.
func lookupSum(dir string, k statKey) (string, bool) {
	if dir == "" {
		return "", false
	}
	f, err := os.Open(filepath.Join(dir, k.entryName()))
	if err != nil {
		return "", false
	}
	defer f.Close()
	const most = 64 << 10 // a quoted path of PATH_MAX and the numbers fit
	b, err := io.ReadAll(io.LimitReader(f, most+1))
	if err != nil || len(b) > most {
		return "", false
	}
	line := string(b)
	i := strings.LastIndexByte(strings.TrimSuffix(line, "\n"), ' ')
	if i < 0 {
		return "", false
	}
	sum := strings.TrimSuffix(line[i+1:], "\n")
	if line != k.line(sum) || !strings.HasPrefix(sum, "xxh64:") {
		return "", false
	}
	return sum, true
}

// storeSum remembers sum for the file key describes (atomically: a
// temporary file renamed into place), unless the file changed too recently.
func storeSum(dir string, k statKey, sum string, settle time.Duration) {
	if dir == "" {
		return
	}
	settled := time.Now().Add(-settle).UnixNano()
	if k.mtime > settled || k.ctime > settled {
		return
	}
	if os.MkdirAll(dir, 0o755) != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.WriteString(k.line(sum))
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(dir, k.entryName())) != nil {
		os.Remove(f.Name())
	}
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
