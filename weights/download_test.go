package weights

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testCommit = "0123456789abcdef0123456789abcdef01234567"

// fakeHub serves one model repo like the HF hub: the revision API, resolve URLs with
// git-sha1 ETags for small files and an X-Linked-Etag + redirect to a separate CDN
// host for the LFS weights.
type fakeHub struct {
	hub, cdn *httptest.Server
	config   []byte
	weights  []byte

	mu          sync.Mutex
	corrupt     bool // CDN serves damaged weights
	ignoreRange bool // CDN answers 200 to range requests
	ranges      []string
	cdnGets     int
	hubAuth     []string
	cdnAuth     []string
	// Hooks that take over a request when they return true; n counts the
	// requests to that server so far (1 for the first).
	hubHook func(w http.ResponseWriter, r *http.Request, n int) bool
	cdnHook func(w http.ResponseWriter, r *http.Request, n int) bool
	hubReqs int
}

func gitBlobSHA1(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_TOKEN", "")
	f := &fakeHub{config: tinyConfigJSON(nil), weights: buildSafetensors(tinySpecs(), map[string]string{"format": "pt"})}
	f.cdn = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.cdnGets++
		f.cdnAuth = append(f.cdnAuth, r.Header.Get("Authorization"))
		f.ranges = append(f.ranges, r.Header.Get("Range"))
		data, ignore, hook, n := f.weights, f.ignoreRange, f.cdnHook, f.cdnGets
		if f.corrupt {
			data = append([]byte(nil), data...)
			data[len(data)-1] ^= 0xff
		}
		f.mu.Unlock()
		if hook != nil && hook(w, r, n) {
			return
		}
		if ignore {
			r.Header.Del("Range")
		}
		http.ServeContent(w, r, "model.safetensors", time.Time{}, bytes.NewReader(data))
	}))
	f.hub = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hubAuth = append(f.hubAuth, r.Header.Get("Authorization"))
		f.hubReqs++
		hook, n := f.hubHook, f.hubReqs
		f.mu.Unlock()
		if hook != nil && hook(w, r, n) {
			return
		}
		switch r.URL.Path {
		case "/api/models/org/tiny/revision/main", "/api/models/org/tiny/revision/" + testCommit:
			json.NewEncoder(w).Encode(map[string]any{"id": "org/tiny", "sha": testCommit, "siblings": []map[string]string{
				{"rfilename": ".gitattributes"}, {"rfilename": "config.json"}, {"rfilename": "model.safetensors"}, {"rfilename": "pytorch_model.bin"}}})
		case "/org/tiny/resolve/" + testCommit + "/config.json":
			w.Header().Set("X-Repo-Commit", testCommit)
			w.Header().Set("ETag", `"`+gitBlobSHA1(f.config)+`"`)
			http.ServeContent(w, r, "config.json", time.Time{}, bytes.NewReader(f.config))
		case "/org/tiny/resolve/" + testCommit + "/model.safetensors":
			w.Header().Set("X-Repo-Commit", testCommit)
			w.Header().Set("X-Linked-Etag", `"`+sha256Hex(f.weights)+`"`)
			w.Header().Set("X-Linked-Size", fmt.Sprint(len(f.weights)))
			http.Redirect(w, r, f.cdn.URL+"/lfs/model.safetensors", http.StatusFound)
		default:
			w.Header().Set("X-Error-Message", "Repository not found")
			http.Error(w, "not found", http.StatusNotFound)
		}
	}))
	t.Cleanup(f.hub.Close)
	t.Cleanup(f.cdn.Close)
	return f
}

// opts points at the fake hub with timeouts that bound every test to seconds
// even if something hangs, and retries without real waits.
func (f *fakeHub) opts(cache string) ResolveOptions {
	return ResolveOptions{CacheDir: cache, TorchHubDir: filepath.Join(cache, "torch-none"), Endpoint: f.hub.URL,
		Hub: HubOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, ReadIdleTimeout: 5 * time.Second,
			MaxAttempts: 3, RetryBaseDelay: time.Millisecond, MaxRetryWait: time.Second}}
}

func TestDownloadLayout(t *testing.T) {
	hub := newFakeHub(t)
	t.Setenv("HF_TOKEN", "secret")
	cache := t.TempDir()
	var log bytes.Buffer
	o := hub.opts(cache)
	o.Progress = &log
	snap, err := Download(context.Background(), "org/tiny", o)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(cache, "models--org--tiny")
	if snap != filepath.Join(base, "snapshots", testCommit) {
		t.Errorf("snapshot dir %s", snap)
	}
	for file, etag := range map[string]string{"config.json": gitBlobSHA1(hub.config), "model.safetensors": sha256Hex(hub.weights)} {
		target, err := os.Readlink(filepath.Join(snap, file))
		if err != nil || target != "../../blobs/"+etag {
			t.Errorf("%s -> %q (%v), want ../../blobs/%s", file, target, err, etag)
		}
		if st, err := os.Stat(filepath.Join(base, "blobs", etag)); err != nil || st.Size() == 0 {
			t.Errorf("blob %s: %v", etag, err)
		}
	}
	if ref, _ := os.ReadFile(filepath.Join(base, "refs", "main")); string(ref) != testCommit {
		t.Errorf("refs/main = %q", ref)
	}
	if _, err := os.Stat(filepath.Join(snap, "pytorch_model.bin")); err == nil {
		t.Error("pytorch_model.bin should not be downloaded")
	}
	c, err := Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !strings.Contains(log.String(), "org/tiny/model.safetensors") {
		t.Errorf("no progress lines: %q", log.String())
	}
	for _, a := range hub.hubAuth {
		if a != "Bearer secret" {
			t.Errorf("hub request without the token: %q", a)
		}
	}
	for _, a := range hub.cdnAuth {
		if a != "" {
			t.Errorf("token leaked to the CDN host: %q", a)
		}
	}

	// A second download finds everything in place; Resolve finds it offline.
	gets := hub.cdnGets
	if _, err := Download(context.Background(), "org/tiny", hub.opts(cache)); err != nil {
		t.Fatal(err)
	}
	if hub.cdnGets != gets {
		t.Error("second Download fetched the weights again")
	}
	o = hub.opts(cache)
	o.Offline = true
	if p, err := Resolve(context.Background(), "org/tiny", o); err != nil || p != snap {
		t.Errorf("Resolve = %q, %v", p, err)
	}
	o.Revision = testCommit
	if p, err := Resolve(context.Background(), "org/tiny", o); err != nil || p != snap {
		t.Errorf("Resolve at commit = %q, %v", p, err)
	}
}

func TestDownloadChecksumMismatch(t *testing.T) {
	hub := newFakeHub(t)
	hub.corrupt = true
	cache := t.TempDir()
	_, err := Download(context.Background(), "org/tiny", hub.opts(cache))
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("error %v", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(cache, "models--org--tiny", "blobs"))
	for _, b := range blobs {
		if b.Name() != gitBlobSHA1(hub.config) {
			t.Errorf("left behind: %s", b.Name())
		}
	}
	// Fixed server: the download now succeeds from scratch.
	hub.corrupt = false
	if _, err := Download(context.Background(), "org/tiny", hub.opts(cache)); err != nil {
		t.Fatal(err)
	}
}

func TestDownloadResume(t *testing.T) {
	for _, ignoreRange := range []bool{false, true} {
		t.Run(fmt.Sprint("ignoreRange=", ignoreRange), func(t *testing.T) {
			hub := newFakeHub(t)
			hub.ignoreRange = ignoreRange
			cache := t.TempDir()
			half := len(hub.weights) / 2
			partial := filepath.Join(cache, "models--org--tiny", "blobs", sha256Hex(hub.weights)+".incomplete")
			prefix := hub.weights[:half]
			if ignoreRange { // garbage the restart must overwrite
				prefix = bytes.Repeat([]byte{0xee}, half)
			}
			writeFile(t, partial, prefix)
			snap, err := Download(context.Background(), "org/tiny", hub.opts(cache))
			if err != nil {
				t.Fatal(err)
			}
			if len(hub.ranges) != 1 || hub.ranges[0] != fmt.Sprintf("bytes=%d-", half) {
				t.Errorf("CDN saw ranges %q", hub.ranges)
			}
			got, err := os.ReadFile(filepath.Join(snap, "model.safetensors"))
			if err != nil || !bytes.Equal(got, hub.weights) {
				t.Errorf("resumed file differs (%v)", err)
			}
			if _, err := os.Stat(partial); !os.IsNotExist(err) {
				t.Error(".incomplete left behind")
			}
		})
	}
}

func TestDownloadErrors(t *testing.T) {
	hub := newFakeHub(t)
	cache := t.TempDir()
	o := hub.opts(cache)
	o.Offline = true
	if _, err := Download(context.Background(), "org/tiny", o); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Errorf("offline: %v", err)
	}
	t.Setenv("HF_HUB_OFFLINE", "1")
	_, err := Resolve(context.Background(), "org/tiny", hub.opts(cache))
	if err == nil || !strings.Contains(err.Error(), "offline") || !strings.Contains(err.Error(), "models--org--tiny") || !strings.Contains(err.Error(), "torch hub") {
		t.Errorf("Resolve offline: %v", err)
	}
	t.Setenv("HF_HUB_OFFLINE", "")
	if _, err := Download(context.Background(), "org/missing", hub.opts(cache)); err == nil || !strings.Contains(err.Error(), "Repository not found") {
		t.Errorf("missing repo: %v", err)
	}
	if _, err := Download(context.Background(), "../etc", hub.opts(cache)); err == nil {
		t.Error("bad repo id accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Download(ctx, "org/tiny", hub.opts(cache)); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("canceled: %v", err)
	}
}

func TestResolveOrder(t *testing.T) {
	t.Setenv("HF_HUB_OFFLINE", "")
	root := t.TempDir()
	o := ResolveOptions{CacheDir: filepath.Join(root, "hf"), TorchHubDir: filepath.Join(root, "torch"), Offline: true}
	ctx := context.Background()

	// 1. An existing directory or file is returned as is.
	dir := filepath.Join(root, "mymodel")
	writeTinyModel(t, dir)
	if p, err := Resolve(ctx, dir, o); err != nil || p != dir {
		t.Errorf("dir: %q %v", p, err)
	}
	// 2. Torch hub .pt for a repo id absent from the HF cache, and for a bare name.
	pt := filepath.Join(root, "torch", "checkpoints", "esm2_t6_8M_UR50D.pt")
	writeFile(t, pt, []byte("x"))
	if p, err := Resolve(ctx, "facebook/esm2_t6_8M_UR50D", o); err != nil || p != pt {
		t.Errorf("torch hub: %q %v", p, err)
	}
	if p, err := Resolve(ctx, "esm2_t6_8M_UR50D", o); err != nil || p != pt {
		t.Errorf("bare name: %q %v", p, err)
	}
	// 3. The HF cache wins over the torch hub for a repo id.
	snap := filepath.Join(root, "hf", "models--facebook--esm2_t6_8M_UR50D", "snapshots", testCommit)
	writeTinyModel(t, snap)
	writeFile(t, filepath.Join(root, "hf", "models--facebook--esm2_t6_8M_UR50D", "refs", "main"), []byte(testCommit+"\n"))
	if p, err := Resolve(ctx, "facebook/esm2_t6_8M_UR50D", o); err != nil || p != snap {
		t.Errorf("hf cache: %q %v", p, err)
	}
	// A bare name prefers the torch hub file.
	if p, err := Resolve(ctx, "esm2_t6_8M_UR50D", o); err != nil || p != pt {
		t.Errorf("bare name with both: %q %v", p, err)
	}
	// An incomplete snapshot (weights missing) is not used.
	os.Remove(filepath.Join(snap, "model.safetensors"))
	if p, err := Resolve(ctx, "facebook/esm2_t6_8M_UR50D", o); err != nil || p != pt {
		t.Errorf("incomplete snapshot: %q %v", p, err)
	}
	// Environment defaults.
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HOME", "/x/hfhome")
	t.Setenv("TORCH_HOME", "/x/torchhome")
	t.Setenv("HF_ENDPOINT", "https://mirror.example/")
	d := ResolveOptions{}.withDefaults()
	if d.CacheDir != "/x/hfhome/hub" || d.TorchHubDir != "/x/torchhome/hub" || d.Endpoint != "https://mirror.example" || d.Revision != "main" || d.Offline {
		t.Errorf("defaults %+v", d)
	}
	t.Setenv("HF_HUB_CACHE", "/x/cache")
	if d := (ResolveOptions{}).withDefaults(); d.CacheDir != "/x/cache" {
		t.Errorf("HF_HUB_CACHE ignored: %s", d.CacheDir)
	}
}
