package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FakeHub serves dir's config.json and model.safetensors as the Hugging
// Face hub serves repo (an "org/name") at commit: the revision API, and
// resolve URLs with the hub's headers (the commit, a sha256 etag and size
// for the LFS weights, a git blob sha1 etag for the config). gets counts the
// GET requests for files. The server is closed when t ends.
func FakeHub(t testing.TB, repo, commit, dir string) (srv *httptest.Server, gets *atomic.Int64) {
	t.Helper()
	files := map[string][]byte{}
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	gets = new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/models/"+repo+"/revision/main":
			json.NewEncoder(w).Encode(map[string]any{"sha": commit, "siblings": []map[string]string{
				{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}}})
		case strings.HasPrefix(r.URL.Path, "/"+repo+"/resolve/"+commit+"/"):
			name := filepath.Base(r.URL.Path)
			b, ok := files[name]
			if !ok {
				http.NotFound(w, r)
				return
			}
			if r.Method == http.MethodGet {
				gets.Add(1)
			}
			w.Header().Set("X-Repo-Commit", commit)
			if name == "model.safetensors" { // LFS file: sha256 etag
				w.Header().Set("X-Linked-Etag", `"`+SHA256Hex(b)+`"`)
				w.Header().Set("X-Linked-Size", fmt.Sprint(len(b)))
			} else { // small file: git blob sha1 etag
				w.Header().Set("ETag", `"`+GitBlobSHA1(b)+`"`)
			}
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, gets
}
