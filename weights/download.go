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
	"unicode"
	"unicode/utf8"

	"github.com/esm2go/esm2go/internal/ctxio"
)

// Download fetches config.json and the safetensors weights (model.safetensors, or
// the index and its shards) of a hub model repo into the HF hub cache, laid out as
// huggingface_hub does (blobs/<etag>, snapshots/<commit>/<file> symlinks,
// refs/<revision>), so Python tools share the files. It returns the snapshot
// directory.
//
// Every file is checked against its etag (sha256 for LFS files, git blob sha1
// for small ones) and its announced size: a body longer than announced is cut
// there with an error, a shorter one is resumed. Connections that do not answer
// or stall fail after the timeouts of opts.Hub; transient failures (connection
// errors, timeouts, HTTP 408, 429, 500, 502, 503, 504) are retried with
// exponential backoff, resuming the partial file with a Range request, and each
// retry is logged to opts.Progress. 401, 403 and 404 fail at once. When ctx
// ends, Download returns promptly and leaves <blob>.incomplete for the next run
// to resume, as huggingface_hub does. The hub token (HF_TOKEN) is sent only to
// the endpoint's host, never to a host a redirect leads to.
func Download(ctx context.Context, repo string, opts ResolveOptions) (snapshotDir string, err error) {
	o := opts.withDefaults()
	if !repoIDRe.MatchString(repo) || strings.Contains(repo, "..") {
		return "", fmt.Errorf("download: %q is not a repo id like facebook/esm2_t33_650M_UR50D", clip(repo))
	}
	if o.Offline {
		return "", fmt.Errorf("download %s: offline mode (HF_HUB_OFFLINE or Offline) forbids downloads", repo)
	}
	if err := validRepoPath(o.Revision); err != nil {
		return "", fmt.Errorf("download %s: revision %q: %w", repo, clip(o.Revision), err)
	}
	h, err := o.Hub.withDefaults()
	if err != nil {
		return "", fmt.Errorf("download %s: %w", repo, err)
	}
	d := &downloader{o: o, h: h, repo: repo, token: os.Getenv("HF_TOKEN"), base: filepath.Join(o.CacheDir, repoFolder(repo))}
	if opts.HTTPClient == nil {
		t := newHubTransport(h)
		defer t.CloseIdleConnections()
		d.client = &http.Client{Transport: t}
	} else {
		c := *opts.HTTPClient
		d.client = &c
	}
	// send follows redirects itself, to keep the token on the endpoint's host.
	d.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	commit, sizes, names, err := d.revisionInfo(ctx)
	if err != nil {
		return "", err
	}
	snap := filepath.Join(d.base, "snapshots", commit)
	_, hasSingle := sizes["model.safetensors"]
	_, hasIndex := sizes["model.safetensors.index.json"]
	if _, ok := sizes["config.json"]; !ok {
		return "", fmt.Errorf("download %s@%s: the repo has no config.json (files: %s)", repo, o.Revision, listSome(names))
	}
	if err := d.fetch(ctx, commit, "config.json", sizes["config.json"], maxMetaFile); err != nil {
		return "", err
	}
	switch {
	case hasSingle:
		if err := d.fetch(ctx, commit, "model.safetensors", sizes["model.safetensors"], -1); err != nil {
			return "", err
		}
	case hasIndex:
		if err := d.fetch(ctx, commit, "model.safetensors.index.json", sizes["model.safetensors.index.json"], maxMetaFile); err != nil {
			return "", err
		}
		shards, err := shardNames(filepath.Join(snap, "model.safetensors.index.json"))
		if err != nil {
			return "", fmt.Errorf("download %s: %w", repo, err)
		}
		for _, s := range shards {
			size, ok := sizes[s]
			if !ok {
				return "", fmt.Errorf("download %s@%s: model.safetensors.index.json names shard %q, which the repo does not have", repo, commit, clip(s))
			}
			if err := d.fetch(ctx, commit, s, size, -1); err != nil {
				return "", err
			}
		}
	default:
		return "", fmt.Errorf("download %s@%s: no model.safetensors or model.safetensors.index.json in the repo (files: %s)", repo, o.Revision, listSome(names))
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
	o      ResolveOptions
	h      HubOptions // with defaults
	repo   string
	token  string
	base   string       // <cache>/models--org--name
	client *http.Client // follows no redirect itself
	bar    *progress    // the file being downloaded, nil between files
}

// validRepoPath accepts a relative slash-separated path that stays inside the
// repo: a file name the hub lists, or a revision (main, refs/pr/1, v1.0).
func validRepoPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > 1024:
		return fmt.Errorf("longer than 1024 bytes (%d)", len(p))
	case strings.HasPrefix(p, "/"):
		return errors.New("an absolute path")
	case strings.ContainsRune(p, '\\'):
		return errors.New("contains a backslash")
	case !utf8.ValidString(p):
		return errors.New("not UTF-8")
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return errors.New("contains a control character")
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("has a %q path element", seg)
		}
	}
	return nil
}

// listSome joins the first 10 names (each clipped) and says how many more.
func listSome(names []string) string {
	var b strings.Builder
	for i, n := range names {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(names)-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(clip(n))
	}
	return b.String()
}

// revisionInfo asks the hub API which commit the revision is and which files it
// has, with their sizes (-1 where the API gives none); names keeps the order.
func (d *downloader) revisionInfo(ctx context.Context) (commit string, sizes map[string]int64, names []string, err error) {
	u := d.o.Endpoint + "/api/models/" + d.repo + "/revision/" + url.PathEscape(d.o.Revision) + "?blobs=true"
	what := d.repo + "@" + d.o.Revision
	err = d.retry(ctx, what, func(ctx context.Context) (bool, error) {
		resp, err := d.send(ctx, http.MethodGet, u, nil, followAll)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, statusError("GET "+u, resp)
		}
		var info struct {
			Sha      string `json:"sha"`
			Siblings []struct {
				Rfilename string `json:"rfilename"`
				Size      *int64 `json:"size"`
				LFS       *struct {
					Size *int64 `json:"size"`
				} `json:"lfs"`
			} `json:"siblings"`
		}
		body := &limitedReader{r: resp.Body, n: maxAPIResponse, limit: maxAPIResponse, what: "GET " + u}
		if err := json.NewDecoder(body).Decode(&info); err != nil {
			var te *transientError
			if errors.As(err, &te) || ctx.Err() != nil {
				return false, err
			}
			return false, fmt.Errorf("GET %s: %w", u, err)
		}
		if !commitHashRe.MatchString(info.Sha) {
			return false, fmt.Errorf("GET %s: sha %q is not a commit hash", u, clip(info.Sha))
		}
		if len(info.Siblings) > maxRepoFiles {
			return false, fmt.Errorf("GET %s: %d files listed, more than the %d this downloader accepts", u, len(info.Siblings), maxRepoFiles)
		}
		commit = info.Sha
		sizes = make(map[string]int64, len(info.Siblings))
		names = make([]string, 0, len(info.Siblings))
		for _, s := range info.Siblings {
			if err := validRepoPath(s.Rfilename); err != nil {
				return false, fmt.Errorf("GET %s: refusing file name %q listed by the hub: %w", u, clip(s.Rfilename), err)
			}
			size := int64(-1)
			switch { // an LFS file's own size first: a plain "size" could be its pointer's
			case s.LFS != nil && s.LFS.Size != nil:
				size = *s.LFS.Size
			case s.Size != nil:
				size = *s.Size
			}
			if size < -1 {
				return false, fmt.Errorf("GET %s: file %q has size %d", u, clip(s.Rfilename), size)
			}
			sizes[s.Rfilename] = size
			names = append(names, s.Rfilename)
		}
		return false, nil
	})
	if err != nil {
		return "", nil, nil, fmt.Errorf("download %s: %w", what, err)
	}
	return commit, sizes, names, nil
}

type fileMeta struct {
	etag   string
	size   int64 // -1 when unknown
	max    int64 // > 0: the most bytes accepted for this file
	commit string
}

var etagRe = regexp.MustCompile(`^[0-9A-Za-z_-]{1,128}$`)

// head reads a file's metadata with a HEAD request that follows only same-host
// redirects: an LFS file redirects to a CDN, and its X-Linked-* headers are on the
// hub's own reply.
func (d *downloader) head(ctx context.Context, u string) (fileMeta, error) {
	resp, err := d.send(ctx, http.MethodHead, u, http.Header{"Accept-Encoding": {"identity"}}, followSameHost)
	if err != nil {
		return fileMeta{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 || resp.StatusCode < 200 {
		return fileMeta{}, statusError("HEAD "+u, resp)
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
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n < 0 {
			return fileMeta{}, fmt.Errorf("HEAD %s: bad size %q", u, clip(size))
		}
		m.size = n
	}
	if !etagRe.MatchString(m.etag) {
		return fileMeta{}, fmt.Errorf("HEAD %s: no usable ETag / X-Linked-Etag (got %q)", u, clip(m.etag))
	}
	return m, nil
}

// fetch makes snapshots/<commit>/<file> exist, downloading its blob if needed.
// apiSize is the size the API listed (-1 = none); maxSize > 0 refuses a larger file.
func (d *downloader) fetch(ctx context.Context, commit, file string, apiSize, maxSize int64) error {
	if err := validRepoPath(file); err != nil {
		return fmt.Errorf("download %s: file name %q: %w", d.repo, clip(file), err)
	}
	link := filepath.Join(d.base, "snapshots", commit, filepath.FromSlash(file))
	if fileExists(link) {
		return nil
	}
	what := d.repo + "/" + file
	u := d.o.Endpoint + "/" + d.repo + "/resolve/" + commit + "/" + escapePath(file)
	var meta fileMeta
	err := d.retry(ctx, what, func(ctx context.Context) (bool, error) {
		var err error
		meta, err = d.head(ctx, u)
		return false, err
	})
	if err != nil {
		return fmt.Errorf("download %s: %w", what, err)
	}
	if meta.commit != "" && meta.commit != commit {
		return fmt.Errorf("download %s: hub answered for commit %s, asked for %s", what, clip(meta.commit), commit)
	}
	switch {
	case meta.size < 0:
		meta.size = apiSize
	case apiSize >= 0 && apiSize != meta.size:
		return fmt.Errorf("download %s: the hub API lists %d bytes, the file's headers say %d", what, apiSize, meta.size)
	}
	meta.max = maxSize
	if maxSize > 0 && meta.size > maxSize {
		return fmt.Errorf("download %s: %d bytes, more than the %d accepted for this file", what, meta.size, maxSize)
	}
	blob := filepath.Join(d.base, "blobs", meta.etag)
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("download %s: %w", what, err)
	}
	if !fileExists(blob) {
		if err := d.fetchBlob(ctx, u, what, blob, meta); err != nil {
			return fmt.Errorf("download %s: %w", what, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("download %s: %w", what, err)
	}
	rel, err := filepath.Rel(filepath.Dir(link), blob)
	if err != nil {
		return fmt.Errorf("download %s: %w", what, err)
	}
	os.Remove(link) // a dangling link from an earlier, interrupted run
	if err := os.Symlink(rel, link); err != nil {
		return fmt.Errorf("download %s: %w", what, err)
	}
	return nil
}

// fetchBlob downloads into <blob>.incomplete (resuming it, retrying transient
// failures), verifies it and renames it to blob. It holds the same lock file
// huggingface_hub uses for this blob.
func (d *downloader) fetchBlob(ctx context.Context, u, what, blob string, meta fileMeta) error {
	lockPath := filepath.Join(d.o.CacheDir, ".locks", repoFolder(d.repo), meta.etag+".lock")
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := flockContext(ctx, lock); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if fileExists(blob) { // another process finished it while we waited
		return nil
	}

	tmp := blob + ".incomplete"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if meta.size >= 0 && have > meta.size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		have = 0
	}
	if meta.size < 0 || have < meta.size {
		if meta.size >= 0 {
			d.warnDiskSpace(filepath.Dir(blob), meta.size-have)
		}
		var p *progress
		if d.o.Progress != nil {
			p = newProgress(d.o.Progress, what, meta.size, have, d.h.ProgressInterval)
			d.bar = p
			defer func() { d.bar = nil }()
		}
		err := d.retry(ctx, what, func(ctx context.Context) (bool, error) {
			return d.get(ctx, u, f, meta, p)
		})
		if err != nil {
			if p != nil {
				p.interrupt()
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%w (partial file %s kept for the next run to resume)", err, tmp)
			}
			return err
		}
		if p != nil {
			p.finish()
		}
	}
	if err := verifyBlob(ctx, f, meta); err != nil {
		if ctx.Err() != nil {
			return err
		}
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp, blob); err != nil {
		return err
	}
	return nil
}

// warnDiskSpace logs when the file system holding dir has less than need bytes
// free (a warning, not an error, as in huggingface_hub: some file systems report
// free space poorly).
func (d *downloader) warnDiskSpace(dir string, need int64) {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return
	}
	if free := uint64(st.Bavail) * uint64(st.Bsize); free < uint64(need) {
		d.logf("warning: %s has %s free, the download needs %s more", dir, byteSize(int64(min(free, 1<<62))), byteSize(need))
	}
}

// get makes one attempt at downloading u into f, from the end of what f holds
// (a Range request when that is not zero). meta.size is the announced size (-1
// = unknown: then the reply's Content-Length, and without one at most
// maxMetaFile bytes); meta.max, when set, caps the file whatever is announced.
// A 200 reply to a range request restarts the file from zero. The body is read
// up to the announced size and no further: more is an error, less a transient
// error that the next attempt resumes. progressed says whether bytes were written.
func (d *downloader) get(ctx context.Context, u string, f *os.File, meta fileMeta, p *progress) (progressed bool, err error) {
	size := meta.size
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, err
	}
	if size >= 0 && have >= size {
		return false, nil
	}
	if p != nil && p.done != have { // a failed attempt's last write may be short
		p.set(have)
	}
	hdr := http.Header{"Accept-Encoding": {"identity"}}
	if have > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.send(ctx, http.MethodGet, u, hdr, followAll)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		total, err := checkContentRange(resp.Header.Get("Content-Range"), have, size)
		if err != nil {
			return false, fmt.Errorf("GET %s: %w", u, err)
		}
		if size < 0 {
			size = total
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			if err := f.Truncate(0); err != nil {
				return false, err
			}
			have = 0
			if p != nil {
				p.set(0)
			}
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		return false, nil // already complete as far as the server knows; size and checksum decide
	default:
		return false, statusError("GET "+u, resp)
	}
	want := int64(-1) // bytes this reply must carry
	if size >= 0 {
		want = size - have
	}
	if cl := resp.ContentLength; cl >= 0 {
		if want >= 0 && cl != want {
			return false, fmt.Errorf("GET %s: the reply announces %d bytes, expected %d (of %d from byte %d)", u, cl, want, size, have)
		}
		want = cl
	}
	limit := want
	if want < 0 {
		limit = maxMetaFile - have
	}
	if meta.max > 0 && have+limit > meta.max {
		if want >= 0 {
			return false, fmt.Errorf("GET %s: the reply announces %d bytes from byte %d, more than the %d accepted for this file", u, want, have, meta.max)
		}
		limit = meta.max - have
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return false, err
	}
	var w io.Writer = f
	if p != nil {
		w = io.MultiWriter(f, p)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, limit))
	if err != nil {
		return n > 0, err
	}
	if want >= 0 && n < want {
		return n > 0, transient(fmt.Errorf("GET %s: the body ended after %d of %d bytes", u, n, want))
	}
	if resp.ContentLength < 0 && n == limit {
		// Nobody bounded the body but us: one byte more means it is longer than
		// announced. (With a Content-Length, net/http never reads past it.)
		var one [1]byte
		k, _ := io.ReadFull(resp.Body, one[:])
		if ctx.Err() != nil {
			return n > 0, ctx.Err()
		}
		if k > 0 {
			if want < 0 {
				return n > 0, fmt.Errorf("GET %s: no size announced and the body exceeds %d bytes; stopped there", u, have+limit)
			}
			return n > 0, fmt.Errorf("GET %s: the server sent more than the announced %d bytes; stopped there", u, size)
		}
	}
	return n > 0, nil
}

// checkContentRange checks a 206 reply's "bytes start-end/total" against the
// requested start and the announced size (-1 = unknown), and returns the total
// (-1 when the server gives "*").
func checkContentRange(cr string, start, size int64) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("Content-Range %q %s", clip(cr), why)
	}
	rng, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return bad("is not a byte range")
	}
	rng, totalS, ok := strings.Cut(rng, "/")
	if !ok {
		return bad("has no total")
	}
	firstS, lastS, ok := strings.Cut(rng, "-")
	if !ok {
		return bad("has no range")
	}
	first, err1 := strconv.ParseInt(firstS, 10, 64)
	last, err2 := strconv.ParseInt(lastS, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return bad("is malformed")
	}
	if first != start {
		return bad(fmt.Sprintf("does not start at byte %d", start))
	}
	total := int64(-1)
	if totalS != "*" {
		t, err := strconv.ParseInt(totalS, 10, 64)
		if err != nil || t <= last {
			return bad("has a bad total")
		}
		total = t
	}
	if size >= 0 && (last != size-1 || (total >= 0 && total != size)) {
		return bad(fmt.Sprintf("does not end the %d-byte file", size))
	}
	return total, nil
}

// verifyBlob checks the size and the etag checksum of the downloaded file.
func verifyBlob(ctx context.Context, f *os.File, meta fileMeta) error {
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
	if _, err := io.Copy(h, ctxio.Reader(ctx, f)); err != nil {
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
