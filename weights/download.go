package weights

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Download fetches config.json and the safetensors weights (model.safetensors, or
// the index and its shards) of a hub model repo into the HF hub cache, laid out as
// huggingface_hub does (blobs/<etag>, snapshots/<commit>/<file> symlinks,
// refs/<revision>), so Python tools share the files. Partial downloads resume;
// every file is checked against its etag (sha256 for LFS files, git blob sha1 for
// small ones). It returns the snapshot directory.
func Download(ctx context.Context, repo string, opts ResolveOptions) (snapshotDir string, err error) {
	o := opts.withDefaults()
	if !repoIDRe.MatchString(repo) || strings.Contains(repo, "..") {
		return "", fmt.Errorf("download: %q is not a repo id like facebook/esm2_t33_650M_UR50D", repo)
	}
	if o.Offline {
		return "", fmt.Errorf("download %s: offline mode (HF_HUB_OFFLINE or Offline) forbids downloads", repo)
	}
	d := &downloader{o: o, repo: repo, token: os.Getenv("HF_TOKEN"), base: filepath.Join(o.CacheDir, repoFolder(repo))}

	commit, siblings, err := d.revisionInfo(ctx)
	if err != nil {
		return "", err
	}
	snap := filepath.Join(d.base, "snapshots", commit)
	has := map[string]bool{}
	for _, s := range siblings {
		has[s] = true
	}
	if !has["config.json"] {
		return "", fmt.Errorf("download %s@%s: the repo has no config.json", repo, o.Revision)
	}
	files := []string{"config.json"}
	switch {
	case has["model.safetensors"]:
		files = append(files, "model.safetensors")
	case has["model.safetensors.index.json"]:
		files = append(files, "model.safetensors.index.json")
	default:
		return "", fmt.Errorf("download %s@%s: no model.safetensors or model.safetensors.index.json in the repo (files: %s)", repo, o.Revision, strings.Join(siblings, ", "))
	}
	for _, f := range files {
		if err := d.fetch(ctx, commit, f); err != nil {
			return "", err
		}
	}
	if has["model.safetensors.index.json"] && !has["model.safetensors"] {
		shards, err := shardNames(filepath.Join(snap, "model.safetensors.index.json"))
		if err != nil {
			return "", fmt.Errorf("download %s: %w", repo, err)
		}
		for _, s := range shards {
			if err := d.fetch(ctx, commit, s); err != nil {
				return "", err
			}
		}
	}
	if o.Revision != commit {
		ref := filepath.Join(d.base, "refs", filepath.FromSlash(o.Revision))
		if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
			return "", fmt.Errorf("download %s: %w", repo, err)
		}
		if err := writeFileAtomic(ref, []byte(commit)); err != nil {
			return "", fmt.Errorf("download %s: %w", repo, err)
		}
	}
	return snap, nil
}

type downloader struct {
	o     ResolveOptions
	repo  string
	token string
	base  string // <cache>/models--org--name
}

func (d *downloader) newRequest(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	req.Header.Set("User-Agent", "esm2go")
	return req, nil
}

// httpError describes a failed hub reply, with the hub's own error message when given.
func httpError(what string, resp *http.Response) error {
	msg := resp.Header.Get("X-Error-Message")
	if msg == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg = strings.TrimSpace(string(b))
	}
	hint := ""
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		hint = " (gated or private repo? set HF_TOKEN)"
	}
	return fmt.Errorf("%s: HTTP %s%s: %s", what, resp.Status, hint, msg)
}

// revisionInfo asks the hub API which commit the revision is and which files it has.
func (d *downloader) revisionInfo(ctx context.Context) (commit string, files []string, err error) {
	u := d.o.Endpoint + "/api/models/" + d.repo + "/revision/" + url.PathEscape(d.o.Revision)
	req, err := d.newRequest(ctx, http.MethodGet, u)
	if err != nil {
		return "", nil, fmt.Errorf("download %s: %w", d.repo, err)
	}
	resp, err := d.o.HTTPClient.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("download %s: %w", d.repo, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil, httpError("download "+d.repo+": "+u, resp)
	}
	var info struct {
		Sha      string `json:"sha"`
		Siblings []struct {
			Rfilename string `json:"rfilename"`
		} `json:"siblings"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
		return "", nil, fmt.Errorf("download %s: %s: %w", d.repo, u, err)
	}
	if !commitHashRe.MatchString(info.Sha) {
		return "", nil, fmt.Errorf("download %s: %s: sha %q is not a commit hash", d.repo, u, info.Sha)
	}
	for _, s := range info.Siblings {
		files = append(files, s.Rfilename)
	}
	return info.Sha, files, nil
}

type fileMeta struct {
	etag   string
	size   int64 // -1 when unknown
	commit string
}

var etagRe = regexp.MustCompile(`^[0-9A-Za-z_-]{1,128}$`)

// hubClient is the configured client, following only redirects that stay on the
// same host (and port): a redirect to a CDN is handed back to the caller.
func (d *downloader) hubClient() *http.Client {
	c := *d.o.HTTPClient
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("too many redirects")
		}
		if r.URL.Host != via[0].URL.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &c
}

// head reads a file's metadata with a HEAD request that follows only same-host
// redirects: an LFS file redirects to a CDN, and its X-Linked-* headers are on the
// hub's own reply.
func (d *downloader) head(ctx context.Context, u string) (fileMeta, error) {
	req, err := d.newRequest(ctx, http.MethodHead, u)
	if err != nil {
		return fileMeta{}, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := d.hubClient().Do(req)
	if err != nil {
		return fileMeta{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fileMeta{}, httpError("HEAD "+u, resp)
	}
	m := fileMeta{size: -1, commit: resp.Header.Get("X-Repo-Commit")}
	m.etag = resp.Header.Get("X-Linked-Etag")
	if m.etag == "" {
		m.etag = resp.Header.Get("ETag")
	}
	m.etag = strings.Trim(strings.TrimPrefix(m.etag, "W/"), `"`)
	size := resp.Header.Get("X-Linked-Size")
	if size == "" && resp.StatusCode == http.StatusOK {
		size = resp.Header.Get("Content-Length")
	}
	if size != "" {
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n >= 0 {
			m.size = n
		}
	}
	if !etagRe.MatchString(m.etag) {
		return fileMeta{}, fmt.Errorf("HEAD %s: no usable ETag / X-Linked-Etag (got %q)", u, m.etag)
	}
	return m, nil
}

// fetch makes snapshots/<commit>/<file> exist, downloading its blob if needed.
func (d *downloader) fetch(ctx context.Context, commit, file string) error {
	link := filepath.Join(d.base, "snapshots", commit, filepath.FromSlash(file))
	if fileExists(link) {
		return nil
	}
	u := d.o.Endpoint + "/" + d.repo + "/resolve/" + commit + "/" + escapePath(file)
	meta, err := d.head(ctx, u)
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", d.repo, file, err)
	}
	if meta.commit != "" && meta.commit != commit {
		return fmt.Errorf("download %s/%s: hub answered for commit %s, asked for %s", d.repo, file, meta.commit, commit)
	}
	blob := filepath.Join(d.base, "blobs", meta.etag)
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("download %s/%s: %w", d.repo, file, err)
	}
	if !fileExists(blob) {
		if err := d.fetchBlob(ctx, u, file, blob, meta); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("download %s/%s: %w", d.repo, file, err)
	}
	rel, err := filepath.Rel(filepath.Dir(link), blob)
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", d.repo, file, err)
	}
	os.Remove(link) // a dangling link from an earlier, interrupted run
	if err := os.Symlink(rel, link); err != nil {
		return fmt.Errorf("download %s/%s: %w", d.repo, file, err)
	}
	return nil
}

// fetchBlob downloads into <blob>.incomplete (resuming it), verifies it and renames
// it to blob. It holds the same lock file huggingface_hub uses for this blob.
func (d *downloader) fetchBlob(ctx context.Context, u, file, blob string, meta fileMeta) error {
	fail := func(err error) error { return fmt.Errorf("download %s/%s: %w", d.repo, file, err) }
	lockPath := filepath.Join(d.o.CacheDir, ".locks", repoFolder(d.repo), meta.etag+".lock")
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return fail(err)
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fail(err)
	}
	defer lock.Close()
	if err := flockContext(ctx, lock); err != nil {
		return fail(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if fileExists(blob) { // another process finished it while we waited
		return nil
	}

	tmp := blob + ".incomplete"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fail(err)
	}
	if meta.size >= 0 && have > meta.size {
		if err := f.Truncate(0); err != nil {
			return fail(err)
		}
		have = 0
	}
	if meta.size < 0 || have < meta.size {
		if err := d.get(ctx, u, file, f, have, meta.size); err != nil {
			return fail(err)
		}
	}
	if err := verifyBlob(f, meta); err != nil {
		f.Close()
		os.Remove(tmp)
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, blob); err != nil {
		return fail(err)
	}
	return nil
}

// get downloads u into f from offset have (a Range request when have > 0); a 200
// reply to a range request restarts the file from zero.
func (d *downloader) get(ctx context.Context, u, file string, f *os.File, have, size int64) error {
	req, err := d.newRequest(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	req.Header.Set("Accept-Encoding", "identity")
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.hubClient().Do(req)
	if err != nil {
		return err
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		// Off to the CDN: a fresh request, without the hub token.
		resp.Body.Close()
		target, err := req.URL.Parse(loc)
		if err != nil {
			return fmt.Errorf("GET %s: bad redirect %q: %w", u, loc, err)
		}
		cdnReq, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
		if err != nil {
			return err
		}
		cdnReq.Header.Set("User-Agent", "esm2go")
		cdnReq.Header.Set("Accept-Encoding", "identity")
		if r := req.Header.Get("Range"); r != "" {
			cdnReq.Header.Set("Range", r)
		}
		if resp, err = d.o.HTTPClient.Do(cdnReq); err != nil {
			return err
		}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", have)) {
			return fmt.Errorf("GET %s: Content-Range %q does not start at byte %d", u, resp.Header.Get("Content-Range"), have)
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			if err := f.Truncate(0); err != nil {
				return err
			}
			have = 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		return nil // already complete as far as the server knows; the checksum decides
	default:
		return httpError("GET "+u, resp)
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return err
	}
	var w io.Writer = f
	if d.o.Progress != nil {
		p := newProgress(d.o.Progress, d.repo+"/"+file, size, have)
		defer p.finish()
		w = io.MultiWriter(f, p)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w (partial file kept for resuming)", u, err)
	}
	return ctx.Err()
}

// verifyBlob checks the size and the etag checksum of the downloaded file.
func verifyBlob(f *os.File, meta fileMeta) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if meta.size >= 0 && st.Size() != meta.size {
		return fmt.Errorf("size %d, expected %d", st.Size(), meta.size)
	}
	var h hash.Hash
	switch {
	case len(meta.etag) == 64 && isHex(meta.etag):
		h = sha256.New()
	case len(meta.etag) == 40 && isHex(meta.etag):
		h = sha1.New()
		fmt.Fprintf(h, "blob %d\x00", st.Size())
	default:
		return nil // an etag that is no content hash: the size check is all we can do
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(meta.etag) {
		return fmt.Errorf("checksum mismatch: content hashes to %s, etag is %s (bad file deleted)", got, meta.etag)
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// escapePath escapes each segment of a repo file path for a URL.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// flockContext takes an exclusive flock on f, giving up when ctx ends.
func flockContext(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for lock %s (another download?): %w", f.Name(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// progress reports download progress: a bar on a terminal, else a plain line every
// 10% or 30 seconds.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	name  string
	total int64
	done  int64
	last  time.Time
	lastP int64
}

func newProgress(w io.Writer, name string, total, start int64) *progress {
	p := &progress{w: w, name: name, total: total, done: start, last: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(name),
			progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
		p.bar.Set64(start)
		return p
	}
	fmt.Fprintf(w, "downloading %s: %s\n", name, p.amount())
	return p
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.bar != nil {
		p.bar.Add(len(b))
		return len(b), nil
	}
	pct := int64(-1)
	if p.total > 0 {
		pct = p.done * 10 / p.total
	}
	if pct > p.lastP || time.Since(p.last) > 30*time.Second {
		p.lastP, p.last = pct, time.Now()
		fmt.Fprintf(p.w, "downloading %s: %s\n", p.name, p.amount())
	}
	return len(b), nil
}

func (p *progress) amount() string {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	if p.total > 0 {
		return fmt.Sprintf("%s / %s (%d%%)", mib(p.done), mib(p.total), p.done*100/p.total)
	}
	return mib(p.done)
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		return
	}
	if p.lastP < 10 {
		fmt.Fprintf(p.w, "downloading %s: %s done\n", p.name, p.amount())
	}
}
