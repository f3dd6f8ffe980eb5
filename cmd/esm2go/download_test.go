package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esm2go/esm2go/internal/testutil"
)

// A model missing from the caches is downloaded from the hub (here a local
// server that speaks the hub's protocol and serves the committed tiny
// fixture), checked, put in the HF cache layout, and used; a second run
// finds it in the cache with the server gone.
func TestEmbedDownloadsModel(t *testing.T) {
	files := map[string][]byte{}
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(tinyModel, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	const commit = "89abcdef0123456789abcdef0123456789abcdef"
	var gets int
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/models/test-org/esm2_tiny/revision/main":
			json.NewEncoder(w).Encode(map[string]any{"sha": commit, "siblings": []map[string]string{
				{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}}})
		case strings.HasPrefix(r.URL.Path, "/test-org/esm2_tiny/resolve/"+commit+"/"):
			name := filepath.Base(r.URL.Path)
			b, ok := files[name]
			if !ok {
				http.NotFound(w, r)
				return
			}
			if r.Method == http.MethodGet {
				gets++
			}
			w.Header().Set("X-Repo-Commit", commit)
			if name == "model.safetensors" { // LFS file: sha256 etag
				w.Header().Set("X-Linked-Etag", `"`+testutil.SHA256Hex(b)+`"`)
				w.Header().Set("X-Linked-Size", fmt.Sprint(len(b)))
			} else { // small file: git blob sha1 etag
				w.Header().Set("ETag", `"`+testutil.GitBlobSHA1(b)+`"`)
			}
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
		default:
			http.NotFound(w, r)
		}
	}))
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
	if gets != 2 {
		t.Fatalf("%d files downloaded, want 2", gets)
	}
	snap := filepath.Join(home, "hub", "models--test-org--esm2_tiny", "snapshots", commit, "model.safetensors")
	if b, err := os.ReadFile(snap); err != nil || !bytes.Equal(b, files["model.safetensors"]) {
		t.Fatalf("cache snapshot %s: %v", snap, err)
	}
	hub.Close() // the second run must not need the network
	code, _, stderr = runCLI(t, "embed", "--model", "test-org/esm2_tiny", "--device", "cpu", "--overwrite", "--out", out, fasta)
	if code != 0 {
		t.Fatalf("embed from the cache: status %d\n%s", code, stderr)
	}
}
