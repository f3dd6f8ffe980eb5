package weights

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a log writer safe to read while a download writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hijack takes over the connection of a request, to answer with bytes that
// net/http would not let a handler send.
func hijack(t *testing.T, w http.ResponseWriter) net.Conn {
	t.Helper()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return nil
	}
	return conn
}

// stallUntil blocks a handler until the client goes away or the test ends.
func stallUntil(t *testing.T, r *http.Request) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) }) // runs before the servers' Close, which waits for handlers
	select {
	case <-r.Context().Done():
	case <-done:
	}
}

// writeHalfAndStall sends full headers and the first half of data, then stalls.
func writeHalfAndStall(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	stallUntil(t, r)
}

func (f *fakeHub) partial(cache string) string {
	return filepath.Join(cache, "models--org--tiny", "blobs", sha256Hex(f.weights)+".incomplete")
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return st.Size()
}

func checkWeights(t *testing.T, hub *fakeHub, snap string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(snap, "model.safetensors"))
	if err != nil || !bytes.Equal(got, hub.weights) {
		t.Errorf("downloaded weights differ from the served ones (%v)", err)
	}
}

// A server that accepts connections and never answers, and a port where
// nothing listens: each attempt fails fast, is retried MaxAttempts times with
// a log line, and the error says why.
func TestDownloadNoAnswer(t *testing.T) {
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c) // held open, never answered
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })

	var log syncBuffer
	o := ResolveOptions{CacheDir: t.TempDir(), Endpoint: "http://" + ln.Addr().String(), Progress: &log,
		Hub: HubOptions{ResponseHeaderTimeout: 100 * time.Millisecond, MaxAttempts: 2, RetryBaseDelay: time.Millisecond}}
	_, err = Download(context.Background(), "org/tiny", o)
	if err == nil || !strings.Contains(err.Error(), "no response within 100ms") || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Errorf("silent server: %v", err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2 attempts", n)
	}
	if n := strings.Count(log.String(), "retrying in"); n != 1 {
		t.Errorf("%d retry lines, want 1:\n%s", n, log.String())
	}

	// Nothing listens: connection refused, retried.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Endpoint = "http://" + free.Addr().String()
	free.Close()
	o.Hub.MaxAttempts = 3
	_, err = Download(context.Background(), "org/tiny", o)
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Errorf("closed port: %v", err)
	}
}

// A body that stalls mid-way fails after ReadIdleTimeout and is resumed with a
// Range request; one that always stalls ends in an error that keeps the partial.
func TestDownloadStalledBody(t *testing.T) {
	t.Run("resumes", func(t *testing.T) {
		hub := newFakeHub(t)
		hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n > 1 {
				return false
			}
			writeHalfAndStall(t, w, r, hub.weights)
			return true
		}
		cache := t.TempDir()
		var log syncBuffer
		o := hub.opts(cache)
		o.Hub.ReadIdleTimeout = 100 * time.Millisecond
		o.Progress = &log
		snap, err := Download(context.Background(), "org/tiny", o)
		if err != nil {
			t.Fatal(err)
		}
		checkWeights(t, hub, snap)
		if want := []string{"", fmt.Sprintf("bytes=%d-", len(hub.weights)/2)}; fmt.Sprint(hub.ranges) != fmt.Sprint(want) {
			t.Errorf("CDN saw ranges %q, want %q", hub.ranges, want)
		}
		if l := log.String(); !strings.Contains(l, "no data for 100ms (stalled connection); retrying in") || !strings.Contains(l, "downloaded org/tiny/model.safetensors") {
			t.Errorf("log lacks the retry or the progress line:\n%s", l)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		hub := newFakeHub(t)
		half := len(hub.weights) / 2
		hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
			switch n {
			case 1: // half the file, then silence
				writeHalfAndStall(t, w, r, hub.weights)
			case 2: // the resume gets one byte, then silence
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", half, len(hub.weights)-1, len(hub.weights)))
				w.Header().Set("Content-Length", fmt.Sprint(len(hub.weights)-half))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(hub.weights[half : half+1])
				w.(http.Flusher).Flush()
				stallUntil(t, r)
			default: // headers never come
				stallUntil(t, r)
			}
			return true
		}
		cache := t.TempDir()
		o := hub.opts(cache)
		o.Hub.ReadIdleTimeout = 100 * time.Millisecond
		o.Hub.ResponseHeaderTimeout = 100 * time.Millisecond
		o.Hub.MaxAttempts = 2
		_, err := Download(context.Background(), "org/tiny", o)
		// Each stalled attempt made progress, which restarts the count of
		// failures in a row: without that, the second attempt would have been
		// the last; the third, silent one is the second failure in a row.
		if err == nil || !strings.Contains(err.Error(), "no response within 100ms") || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Errorf("error %v", err)
		}
		if got := fileSize(t, hub.partial(cache)); got != int64(half+1) {
			t.Errorf("partial file has %d bytes, want %d", got, half+1)
		}
	})
}

// Bodies of the wrong length: never more than announced is written, more is
// an error, less is resumed.
func TestDownloadBodyLength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		serve   func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte)
		wantErr string // "" = success
		gets    int
	}{{
		// The connection lies: it announces the right length, then keeps
		// sending; net/http stops at Content-Length.
		name: "more than Content-Length",
		serve: func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
			c := hijack(t, w)
			defer c.Close()
			// (Connection: close keeps net/http from logging the extra bytes
			// as an unsolicited response on an idle connection.)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(data))
			c.Write(data)
			c.Write(bytes.Repeat([]byte{0xee}, 1<<20))
		},
		gets: 1,
	}, {
		// No length at all and an endless body: cut at the size from the hub.
		name: "endless body without length",
		serve: func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
			c := hijack(t, w)
			defer c.Close()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
			c.Write(data)
			junk := bytes.Repeat([]byte{0xee}, 64<<10)
			for range 1024 { // 64 MiB at most; the client hangs up long before
				if _, err := c.Write(junk); err != nil {
					return
				}
			}
		},
		wantErr: "more than the announced",
		gets:    1,
	}, {
		name: "Content-Length larger than the hub's size",
		serve: func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(2*len(data)))
			w.Write(data)
			w.Write(data)
		},
		wantErr: fmt.Sprintf("announces %d bytes", 2*len(buildSafetensors(tinySpecs(), map[string]string{"format": "pt"}))),
		gets:    1,
	}, {
		name: "shorter than Content-Length, then resumed",
		serve: func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
			if r.Header.Get("Range") != "" {
				http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(data))
				return
			}
			c := hijack(t, w)
			defer c.Close()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(data))
			c.Write(data[:len(data)/2])
		},
		gets: 2,
	}, {
		name: "shorter without length, then resumed",
		serve: func(t *testing.T, w http.ResponseWriter, r *http.Request, data []byte) {
			if r.Header.Get("Range") != "" {
				http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(data))
				return
			}
			c := hijack(t, w)
			defer c.Close()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
			c.Write(data[:len(data)/2])
		},
		gets: 2,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			hub := newFakeHub(t)
			hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
				tc.serve(t, w, r, hub.weights)
				return true
			}
			cache := t.TempDir()
			snap, err := Download(context.Background(), "org/tiny", hub.opts(cache))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkWeights(t, hub, snap)
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if got := fileSize(t, hub.partial(cache)); got > int64(len(hub.weights)) {
					t.Errorf("partial file has %d bytes, more than the %d announced", got, len(hub.weights))
				}
			}
			if hub.cdnGets != tc.gets {
				t.Errorf("%d GETs, want %d (ranges %q)", hub.cdnGets, tc.gets, hub.ranges)
			}
		})
	}
}

// 503 twice then success: retried with a log line each time, right result.
func TestDownloadRetries5xx(t *testing.T) {
	hub := newFakeHub(t)
	hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n > 2 {
			return false
		}
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return true
	}
	var log syncBuffer
	o := hub.opts(t.TempDir())
	o.Progress = &log
	snap, err := Download(context.Background(), "org/tiny", o)
	if err != nil {
		t.Fatal(err)
	}
	checkWeights(t, hub, snap)
	if hub.cdnGets != 3 {
		t.Errorf("%d GETs, want 3", hub.cdnGets)
	}
	if n := strings.Count(log.String(), "HTTP 503 Service Unavailable"); n != 2 {
		t.Errorf("%d retry lines for the 503s, want 2:\n%s", n, log.String())
	}

	// The API too: a 502 then the answer.
	hub = newFakeHub(t)
	hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n > 1 {
			return false
		}
		w.WriteHeader(http.StatusBadGateway)
		return true
	}
	if _, err := Download(context.Background(), "org/tiny", hub.opts(t.TempDir())); err != nil {
		t.Fatal(err)
	}
}

// A 429 whose Retry-After exceeds MaxRetryWait ends at once with a clear error.
func TestDownloadRetryAfterCap(t *testing.T) {
	hub := newFakeHub(t)
	hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	_, err := Download(context.Background(), "org/tiny", hub.opts(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "retry after 1h0m0s") {
		t.Errorf("error %v", err)
	}
	if hub.hubReqs != 1 {
		t.Errorf("%d requests, want 1", hub.hubReqs)
	}
	for v, want := range map[string]time.Duration{"": 0, "7": 7 * time.Second, "-3": 0, "soon": 0,
		time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat): 0, "99999999999999": 24 * time.Hour} {
		if got := retryAfter(v); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", v, got, want)
		}
	}
	if got := retryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); got < 58*time.Minute || got > time.Hour {
		t.Errorf("retryAfter(date in an hour) = %s", got)
	}
}

// 401, 403 and 404 fail on the first request with a message that says what to do.
func TestDownloadNoRetryOn4xx(t *testing.T) {
	for _, tc := range []struct {
		status int
		path   string // "" = the API
		want   string
	}{
		{http.StatusUnauthorized, "", "needs an access token in HF_TOKEN"},
		{http.StatusForbidden, "", "needs an access token in HF_TOKEN"},
		{http.StatusNotFound, "", "not found: check the repo id"},
		{http.StatusUnauthorized, "model.safetensors", "needs an access token in HF_TOKEN"},
		{http.StatusNotFound, "config.json", "not found: check the repo id"},
	} {
		t.Run(fmt.Sprint(tc.status, tc.path), func(t *testing.T) {
			hub := newFakeHub(t)
			hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
				if (tc.path == "") != strings.HasPrefix(r.URL.Path, "/api/") || !strings.HasSuffix(r.URL.Path, tc.path) {
					return false
				}
				w.WriteHeader(tc.status)
				fmt.Fprint(w, "Access to model org/tiny is restricted \x1b[31m")
				return true
			}
			_, err := Download(context.Background(), "org/tiny", hub.opts(t.TempDir()))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\x1b") {
				t.Errorf("a terminal escape from the server reached the error: %q", err)
			}
			wantReqs := map[string]int{
				"":                  1, // the API call
				"config.json":       2, // + its HEAD
				"model.safetensors": 4, // + config.json's HEAD and GET, and its HEAD
			}[tc.path]
			if hub.hubReqs != wantReqs {
				t.Errorf("%d hub requests, want %d: retried", hub.hubReqs, wantReqs)
			}
		})
	}
}

// Cancelling mid-body returns promptly with ctx's error and leaves the partial
// file, which the next run resumes.
func TestDownloadCancelMidBody(t *testing.T) {
	hub := newFakeHub(t)
	hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n > 1 {
			return false
		}
		writeHalfAndStall(t, w, r, hub.weights)
		return true
	}
	cache := t.TempDir()
	o := hub.opts(cache)
	o.Hub.ReadIdleTimeout = time.Minute // only the cancellation can end the stalled attempt
	half := int64(len(hub.weights) / 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if st, err := os.Stat(hub.partial(cache)); err == nil && st.Size() == half {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := Download(ctx, "org/tiny", o)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "kept for the next run") {
		t.Fatalf("error %v", err)
	}
	if got := fileSize(t, hub.partial(cache)); got != half {
		t.Fatalf("partial file has %d bytes, want %d", got, half)
	}
	snap, err := Download(context.Background(), "org/tiny", hub.opts(cache))
	if err != nil {
		t.Fatal(err)
	}
	checkWeights(t, hub, snap)
	if want := fmt.Sprintf("bytes=%d-", half); len(hub.ranges) != 2 || hub.ranges[1] != want {
		t.Errorf("CDN saw ranges %q, want a resume at %s", hub.ranges, want)
	}
}

// File names, revisions and listings from the hub that would leave the cache
// or exhaust memory are refused.
func TestDownloadHostileListing(t *testing.T) {
	serveAPI := func(hub *fakeHub, body func(w http.ResponseWriter)) {
		hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
			if !strings.HasPrefix(r.URL.Path, "/api/") {
				return false
			}
			body(w)
			return true
		}
	}
	siblings := func(names ...string) func(w http.ResponseWriter) {
		var s []map[string]string
		for _, n := range names {
			s = append(s, map[string]string{"rfilename": n})
		}
		body, err := json.Marshal(map[string]any{"sha": testCommit, "siblings": s})
		if err != nil {
			t.Fatal(err)
		}
		return func(w http.ResponseWriter) { w.Write(body) }
	}
	root := t.TempDir()
	cache := filepath.Join(root, "a", "b", "cache")
	for _, name := range []string{"../../etc/x", "/etc/passwd", "a/../../x", "a//b", `..\x`, "x\x00y", ""} {
		hub := newFakeHub(t)
		serveAPI(hub, siblings("config.json", "model.safetensors", name))
		_, err := Download(context.Background(), "org/tiny", hub.opts(cache))
		if err == nil || !strings.Contains(err.Error(), "refusing file name") {
			t.Errorf("sibling %q: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "models--org--tiny", "snapshots")); !os.IsNotExist(err) {
		t.Errorf("a refused listing left a snapshot: %v", err)
	}

	hub := newFakeHub(t)
	o := hub.opts(cache)
	o.Revision = "../../../../evil"
	if _, err := Download(context.Background(), "org/tiny", o); err == nil || !strings.Contains(err.Error(), "revision") {
		t.Errorf("revision with ..: %v", err)
	}
	if hub.hubReqs != 0 {
		t.Error("a bad revision was sent to the hub")
	}

	many := fmt.Appendf(nil, `{"sha":%q,"siblings":[{"rfilename":"x"}%s]}`, testCommit, strings.Repeat(`,{"rfilename":"x"}`, maxRepoFiles))
	serveAPI(hub, func(w http.ResponseWriter) { w.Write(many) })
	if _, err := Download(context.Background(), "org/tiny", hub.opts(cache)); err == nil || !strings.Contains(err.Error(), "files listed, more than") {
		t.Errorf("huge listing: %v", err)
	}

	huge := fmt.Appendf(nil, `{"sha":%q,"siblings":[{"rfilename":"%s"}]}`, testCommit, bytes.Repeat([]byte("a"), maxAPIResponse))
	serveAPI(hub, func(w http.ResponseWriter) { w.Write(huge) })
	if _, err := Download(context.Background(), "org/tiny", hub.opts(cache)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized API reply: %v", err)
	}

	// A config.json announced as a terabyte is refused before any byte.
	hub = newFakeHub(t)
	hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if !strings.HasSuffix(r.URL.Path, "/config.json") {
			return false
		}
		w.Header().Set("X-Repo-Commit", testCommit)
		w.Header().Set("ETag", `"`+gitBlobSHA1(hub.config)+`"`)
		w.Header().Set("X-Linked-Size", "1099511627776")
		return true
	}
	if _, err := Download(context.Background(), "org/tiny", hub.opts(cache)); err == nil || !strings.Contains(err.Error(), "more than the 16777216 accepted") {
		t.Errorf("huge config.json: %v", err)
	}

	for _, p := range []string{"config.json", "refs/pr/1", "a/b.safetensors", "v1.0"} {
		if err := validRepoPath(p); err != nil {
			t.Errorf("validRepoPath(%q): %v", p, err)
		}
	}
}

// Redirects: the token stays on the endpoint's host (API calls included), and
// an https endpoint may not redirect to plain http.
func TestDownloadRedirects(t *testing.T) {
	hub := newFakeHub(t)
	t.Setenv("HF_TOKEN", "secret")
	hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			http.Redirect(w, r, hub.cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	var apiAuth []string
	hub.cdnHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			return false
		}
		hub.mu.Lock()
		apiAuth = append(apiAuth, r.Header.Get("Authorization"))
		hub.hubHook = nil
		hub.mu.Unlock()
		hub.hub.Config.Handler.ServeHTTP(w, r) // the hub's answer, from the other host
		return true
	}
	if _, err := Download(context.Background(), "org/tiny", hub.opts(t.TempDir())); err != nil {
		t.Fatal(err)
	}
	if len(apiAuth) != 1 || apiAuth[0] != "" {
		t.Errorf("the API redirect to another host carried %q", apiAuth)
	}

	// https endpoint, redirect to http: refused.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	tlsHub := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	defer tlsHub.Close()
	o := ResolveOptions{CacheDir: t.TempDir(), Endpoint: tlsHub.URL, HTTPClient: tlsHub.Client(), Hub: hub.opts("").Hub}
	if _, err := Download(context.Background(), "org/tiny", o); err == nil || !strings.Contains(err.Error(), "refusing a redirect from https to plain http") {
		t.Errorf("downgrade: %v", err)
	}
}

func TestHubOptionsDefaults(t *testing.T) {
	t.Parallel()
	h, err := HubOptions{}.withDefaults()
	if err != nil || h.ReadIdleTimeout != time.Minute || h.MaxAttempts != 5 || h.ConnectTimeout != 15*time.Second {
		t.Errorf("defaults %+v, %v", h, err)
	}
	if _, err := (HubOptions{ReadIdleTimeout: -1}).withDefaults(); err == nil || !strings.Contains(err.Error(), "ReadIdleTimeout") {
		t.Errorf("negative timeout: %v", err)
	}
	if got := clip(strings.Repeat("é", 300)); len(got) > 210 || !strings.HasSuffix(got, "...") || strings.ContainsRune(got, '?') {
		t.Errorf("clip cut a rune or kept too much: %q", got)
	}
}

// A file whose size nobody announces (no size in the API, no Content-Length on
// HEAD or GET) is cut at maxMetaFile: an endless body cannot fill the disk.
func TestDownloadUnannouncedSize(t *testing.T) {
	hub := newFakeHub(t)
	hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if !strings.HasSuffix(r.URL.Path, "/config.json") {
			return false
		}
		if r.Method == http.MethodHead {
			w.Header().Set("X-Repo-Commit", testCommit)
			w.Header().Set("ETag", `"`+gitBlobSHA1(hub.config)+`"`)
			return true
		}
		c := hijack(t, w)
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
		junk := bytes.Repeat([]byte{' '}, 64<<10)
		for range 2 * maxMetaFile / len(junk) {
			if _, err := c.Write(junk); err != nil {
				return true
			}
		}
		return true
	}
	cache := t.TempDir()
	_, err := Download(context.Background(), "org/tiny", hub.opts(cache))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("no size announced and the body exceeds %d bytes", maxMetaFile)) {
		t.Fatalf("error %v", err)
	}
	partial := filepath.Join(cache, "models--org--tiny", "blobs", gitBlobSHA1(hub.config)+".incomplete")
	if got := fileSize(t, partial); got != maxMetaFile {
		t.Errorf("partial file has %d bytes, want the %d cap", got, maxMetaFile)
	}
}

// Without a terminal, progress is plain lines: at the start, at each tenth,
// at least every interval, and at the end.
func TestProgressLines(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	p := newProgress(&b, "org/x/model.safetensors", 1000, 0, time.Hour)
	lines := func() int { return strings.Count(b.String(), "\n") }
	if lines() != 1 || !strings.Contains(b.String(), "downloading org/x/model.safetensors: 0 B of 1000 B (0%)") {
		t.Fatalf("first line: %q", b.String())
	}
	p.Write(make([]byte, 5))
	if lines() != 1 {
		t.Errorf("a line within the same tenth and interval: %q", b.String())
	}
	p.Write(make([]byte, 100))
	if lines() != 2 || !strings.Contains(b.String(), "105 B of 1000 B (10%)") {
		t.Errorf("no line at the first tenth: %q", b.String())
	}
	p.interval = time.Nanosecond
	p.Write(make([]byte, 1))
	if lines() != 3 || !strings.Contains(b.String(), "106 B of 1000 B (10%)") {
		t.Errorf("no line after the interval: %q", b.String())
	}
	p.set(0) // a restart from zero
	p.Write(make([]byte, 1000))
	p.finish()
	if !strings.HasSuffix(b.String(), "downloaded org/x/model.safetensors: 1000 B\n") {
		t.Errorf("last line: %q", b.String())
	}
}

// Sizes from the API (with blobs=true) are checked against the file headers.
func TestDownloadAPISizes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lfsSize int
		wantErr string
	}{{"agree", 0, ""}, {"disagree", 1, "the hub API lists"}} {
		t.Run(tc.name, func(t *testing.T) {
			hub := newFakeHub(t)
			hub.hubHook = func(w http.ResponseWriter, r *http.Request, n int) bool {
				if !strings.HasPrefix(r.URL.Path, "/api/") {
					return false
				}
				if r.URL.Query().Get("blobs") != "true" {
					t.Errorf("API call without blobs=true: %s", r.URL)
				}
				json.NewEncoder(w).Encode(map[string]any{"sha": testCommit, "siblings": []map[string]any{
					{"rfilename": "config.json", "size": len(hub.config)},
					{"rfilename": "model.safetensors", "size": 135, "lfs": map[string]any{"size": len(hub.weights) + tc.lfsSize}},
				}})
				return true
			}
			snap, err := Download(context.Background(), "org/tiny", hub.opts(t.TempDir()))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkWeights(t, hub, snap)
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
