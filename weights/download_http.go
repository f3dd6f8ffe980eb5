package weights

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// HubOptions tunes the network side of hub downloads. A zero field takes the
// default named beside it; a negative one is an error.
//
// There is deliberately no deadline on a whole download: the 15B checkpoint is
// about 60 GB and may take hours on a slow link, which is fine as long as bytes
// keep coming. What ends an attempt is silence (ReadIdleTimeout), and a failed
// attempt resumes where it stopped with a Range request.
type HubOptions struct {
	// ConnectTimeout bounds one TCP connect (default 15s). A reachable host
	// answers in well under a second even across continents; 15s leaves room
	// for a congested link or a slow proxy while a black-holed address costs
	// 15s per attempt instead of the kernel's two minutes or more. Applies to
	// the client built here (HTTPClient nil).
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 15s, same reasoning
	// as ConnectTimeout). Applies to the client built here (HTTPClient nil).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait from sending a request (connecting
	// included) to its status line and headers, per redirect hop (default 60s).
	// The hub and its CDN answer in well under a second when healthy; a minute
	// covers a cold CDN object or an overloaded proxy. It applies to any
	// HTTPClient, the caller's included.
	ResponseHeaderTimeout time.Duration
	// ReadIdleTimeout fails an attempt when a response body delivers no byte for
	// this long (default 60s). A stall that long on a live link is rare; a fresh
	// connection that resumes the partial file costs one round trip, so giving
	// up on a silent one sooner is cheap. It applies to any HTTPClient.
	ReadIdleTimeout time.Duration
	// MaxAttempts is how many times one request is tried before its transient
	// failures (connection errors, timeouts, 408, 429, 500, 502, 503, 504) end
	// the download (default 5, as huggingface_hub's http_backoff). For a file
	// body, an attempt that received bytes resets the count, because resuming
	// loses nothing; a file is tried at most maxBodyAttempts times in all.
	MaxAttempts int
	// RetryBaseDelay is the wait before the first retry; each further retry
	// waits twice as long, and every wait is drawn uniformly from [w/2, w] so
	// that many clients failing together do not retry together (default 1s:
	// about 1, 2, 4, 8s).
	RetryBaseDelay time.Duration
	// MaxRetryWait caps a backoff wait and the Retry-After a 429 or 503 reply
	// may ask for (default 2m: the hub's rate limits count over windows of a
	// few minutes). A longer Retry-After ends the download with an error that
	// says when to try again.
	MaxRetryWait time.Duration
	// ProgressInterval is how often a plain progress line is written when
	// Progress is not a terminal (default 30s); a line is also written at each
	// tenth of the file.
	ProgressInterval time.Duration
}

const (
	// maxBodyAttempts caps the attempts at one file body, however many of them
	// made progress.
	maxBodyAttempts = 100
	// maxRedirects caps one request's redirect chain (as Go's http.Client).
	maxRedirects = 10
	// maxAPIResponse caps a hub API reply. The revision info of a model repo
	// with its file list is a few KiB; 16 MiB holds about 100,000 entries.
	maxAPIResponse = 16 << 20
	// maxRepoFiles caps the number of files a revision may list.
	maxRepoFiles = 100_000
	// maxMetaFile caps config.json and model.safetensors.index.json, and any
	// body whose size nobody announced (the 15B index is about 100 KiB).
	maxMetaFile = 16 << 20
	// maxResponseHeader caps the response headers the built-in client reads.
	maxResponseHeader = 64 << 10
)

func (h HubOptions) withDefaults() (HubOptions, error) {
	for _, f := range []struct {
		name string
		v    time.Duration
		def  time.Duration
		dst  *time.Duration
	}{
		{"ConnectTimeout", h.ConnectTimeout, 15 * time.Second, &h.ConnectTimeout},
		{"TLSHandshakeTimeout", h.TLSHandshakeTimeout, 15 * time.Second, &h.TLSHandshakeTimeout},
		{"ResponseHeaderTimeout", h.ResponseHeaderTimeout, 60 * time.Second, &h.ResponseHeaderTimeout},
		{"ReadIdleTimeout", h.ReadIdleTimeout, 60 * time.Second, &h.ReadIdleTimeout},
		{"RetryBaseDelay", h.RetryBaseDelay, time.Second, &h.RetryBaseDelay},
		{"MaxRetryWait", h.MaxRetryWait, 2 * time.Minute, &h.MaxRetryWait},
		{"ProgressInterval", h.ProgressInterval, 30 * time.Second, &h.ProgressInterval},
	} {
		switch {
		case f.v < 0:
			return h, fmt.Errorf("hub options: %s is negative (%s)", f.name, f.v)
		case f.v == 0:
			*f.dst = f.def
		}
	}
	switch {
	case h.MaxAttempts < 0:
		return h, fmt.Errorf("hub options: MaxAttempts is negative (%d)", h.MaxAttempts)
	case h.MaxAttempts == 0:
		h.MaxAttempts = 5
	}
	return h, nil
}

// newHubTransport is the transport used when the caller gives no HTTPClient:
// the default one (proxy from the environment, HTTP/2) with the connect and TLS
// timeouts of h (send times the response headers for every client).
func newHubTransport(h HubOptions) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: h.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = h.TLSHandshakeTimeout
	t.MaxResponseHeaderBytes = maxResponseHeader
	return t
}

// transientError marks a failure worth retrying; retryAfter is the wait the
// server asked for (0 = none).
type transientError struct {
	err        error
	retryAfter time.Duration
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err: err} }

var (
	errNoHeaders = errors.New("no response headers in time")
	errStalled   = errors.New("body stalled")
)

// redirectPolicy says which redirects send follows.
type redirectPolicy int

const (
	// followAll follows every redirect; the token goes only to the host the
	// request started at, and is dropped for good at the first change of host
	// (as huggingface_hub, through requests, does).
	followAll redirectPolicy = iota
	// followSameHost follows redirects on the same host and returns a redirect
	// to another host as the response: the hub's reply to a HEAD of an LFS file
	// is a redirect to the CDN that carries the X-Linked-* headers.
	followSameHost
)

// send makes one attempt at a request, following redirects by policy under the
// response-header timeout, and returns a response whose body fails with a
// transient error when it stalls for ReadIdleTimeout. Its errors are transient
// where retrying can help; when ctx ends, the error is ctx's.
func (d *downloader) send(ctx context.Context, method, u string, hdr http.Header, policy redirectPolicy) (*http.Response, error) {
	actx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(d.h.ResponseHeaderTimeout, func() { cancel(errNoHeaders) })
	fail := func(err error) (*http.Response, error) {
		timer.Stop()
		cancel(nil)
		return nil, err
	}
	auth := d.token != ""
	target := u
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(actx, method, target, nil)
		if err != nil {
			return fail(fmt.Errorf("%s %s: %w", method, urlText(target), err))
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", "esm2go")
		if auth {
			req.Header.Set("Authorization", "Bearer "+d.token)
		}
		resp, err := d.client.Do(req)
		if err != nil {
			return fail(d.requestError(ctx, actx, method, target, err))
		}
		loc := resp.Header.Get("Location")
		if !isRedirect(resp.StatusCode) || loc == "" {
			timer.Stop()
			resp.Body = newWatchedBody(ctx, actx, cancel, resp.Body, d.h.ReadIdleTimeout, method+" "+urlText(target))
			return resp, nil
		}
		next, err := req.URL.Parse(loc)
		if err != nil {
			resp.Body.Close()
			return fail(fmt.Errorf("%s %s: bad redirect %q: %w", method, urlText(target), clip(loc), err))
		}
		if next.Host != req.URL.Host && policy == followSameHost {
			timer.Stop()
			resp.Body = newWatchedBody(ctx, actx, cancel, resp.Body, d.h.ReadIdleTimeout, method+" "+urlText(target))
			return resp, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		switch {
		case hop+1 >= maxRedirects:
			return fail(fmt.Errorf("%s %s: more than %d redirects", method, urlText(u), maxRedirects))
		case next.Scheme != "http" && next.Scheme != "https":
			return fail(fmt.Errorf("%s %s: redirect to %q: not an http(s) URL", method, urlText(target), urlText(loc)))
		case req.URL.Scheme == "https" && next.Scheme == "http":
			return fail(fmt.Errorf("%s %s: refusing a redirect from https to plain http (%s)", method, urlText(target), urlText(next.String())))
		}
		if next.Host != req.URL.Host {
			auth = false
		}
		target = next.String()
		timer.Reset(d.h.ResponseHeaderTimeout)
	}
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// requestError classifies a failed http.Client.Do.
func (d *downloader) requestError(ctx, actx context.Context, method, u string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", method, urlText(u), ctx.Err())
	}
	if errors.Is(context.Cause(actx), errNoHeaders) {
		return transient(fmt.Errorf("%s %s: no response within %s", method, urlText(u), d.h.ResponseHeaderTimeout))
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return fmt.Errorf("%s %s: %w", method, urlText(u), err) // retrying cannot fix a certificate
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // the URL is named once, below
	}
	return transient(fmt.Errorf("%s %s: %w", method, urlText(u), err))
}

// watchedBody ends the attempt (cancelling its context with errStalled) when a
// Read waits idle without a byte, and turns read errors into transient errors,
// or into ctx's error when the caller's context ended. Only time spent inside
// Read counts: a consumer slow to write what it read is not a stalled server.
// Close stops the watch.
type watchedBody struct {
	rc     io.ReadCloser
	ctx    context.Context // the caller's
	actx   context.Context // this attempt's
	cancel context.CancelCauseFunc
	idle   time.Duration
	what   string
	last   atomic.Int64 // UnixNano of the last byte or of entering Read
	inRead atomic.Bool
	closed atomic.Bool
	timer  *time.Timer
}

func newWatchedBody(ctx, actx context.Context, cancel context.CancelCauseFunc, rc io.ReadCloser, idle time.Duration, what string) *watchedBody {
	b := &watchedBody{rc: rc, ctx: ctx, actx: actx, cancel: cancel, idle: idle, what: what}
	b.last.Store(time.Now().UnixNano())
	b.timer = time.AfterFunc(idle, b.check)
	return b
}

// check runs on the timer: it fails the attempt when a Read has waited idle
// without a byte, else re-arms itself for the rest of the interval.
func (b *watchedBody) check() {
	if b.closed.Load() {
		return
	}
	if !b.inRead.Load() {
		b.timer.Reset(b.idle)
		return
	}
	since := time.Since(time.Unix(0, b.last.Load()))
	if since >= b.idle {
		b.cancel(errStalled)
		return
	}
	b.timer.Reset(b.idle - since)
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.last.Store(time.Now().UnixNano())
	b.inRead.Store(true)
	n, err := b.rc.Read(p)
	b.inRead.Store(false)
	if n > 0 {
		b.last.Store(time.Now().UnixNano())
	}
	if err == nil || err == io.EOF {
		return n, err
	}
	switch {
	case b.ctx.Err() != nil:
		err = fmt.Errorf("%s: %w", b.what, b.ctx.Err())
	case errors.Is(context.Cause(b.actx), errStalled):
		err = transient(fmt.Errorf("%s: no data for %s (stalled connection)", b.what, b.idle))
	default:
		err = transient(fmt.Errorf("%s: reading the body: %w", b.what, err))
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.closed.Store(true)
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// statusError describes a failed hub reply: transient for 408, 429 and the 5xx
// a retry can cure, with the server's Retry-After; a hint for 401/403/404.
func statusError(what string, resp *http.Response) error {
	msg := resp.Header.Get("X-Error-Message")
	if msg == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg = strings.TrimSpace(string(b))
	}
	hint := ""
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = " (a gated or private repo needs an access token in HF_TOKEN, with access granted on the repo's page)"
	case http.StatusNotFound:
		hint = " (not found: check the repo id, the revision and the file name; a private repo also needs HF_TOKEN)"
	case http.StatusRequestedRangeNotSatisfiable:
		hint = " (the partial file no longer matches the server's)"
	}
	err := fmt.Errorf("%s: HTTP %s%s: %s", what, clip(resp.Status), hint, clip(msg))
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return &transientError{err: err, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return err
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 when
// absent, unreadable or past, and at most a day.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	const most = 24 * time.Hour // anything longer is as good as never
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(min(max(s, 0), int64(most/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), most)
	}
	return 0
}

// retry runs attempt until it succeeds, fails for good, or MaxAttempts
// transient failures in a row (maxBodyAttempts in all) have happened, waiting
// with exponential backoff and jitter (or the server's Retry-After) between
// attempts and logging each retry. attempt reports whether it made progress,
// which resets the count of failures in a row.
func (d *downloader) retry(ctx context.Context, what string, attempt func(ctx context.Context) (progressed bool, err error)) error {
	inRow := 0
	for total := 1; ; total++ {
		progressed, err := attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				return err
			}
			return fmt.Errorf("%w (after: %v)", ctx.Err(), err)
		}
		var te *transientError
		if !errors.As(err, &te) {
			return err
		}
		if progressed {
			inRow = 0
		}
		inRow++
		if inRow >= d.h.MaxAttempts || total >= maxBodyAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, total)
		}
		wait := d.h.RetryBaseDelay
		for i := 1; i < inRow && wait < d.h.MaxRetryWait; i++ {
			wait *= 2
		}
		wait = min(wait, d.h.MaxRetryWait)
		wait = wait/2 + rand.N(wait/2+1)
		if te.retryAfter > 0 {
			if te.retryAfter > d.h.MaxRetryWait {
				return fmt.Errorf("%w (the server asks to retry after %s, more than the %s this download waits; try again later)",
					err, te.retryAfter.Round(time.Second), d.h.MaxRetryWait)
			}
			wait = te.retryAfter
		}
		d.logf("download %s: %v; retrying in %s (failure %d of at most %d in a row)", what, err, wait.Round(time.Millisecond), inRow, d.h.MaxAttempts)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry after: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// logf writes one line to the progress writer, below a live bar if one is up.
func (d *downloader) logf(format string, args ...any) {
	if d.o.Progress == nil {
		return
	}
	if d.bar != nil {
		d.bar.interrupt()
	}
	fmt.Fprintf(d.o.Progress, format+"\n", args...)
}

// clipLimit is how many bytes of server- or user-supplied text an error
// quotes. Quoted with %q, clipped text grows at most twice (only '"' and '\'
// are escaped once every non-printable rune is '?'), so an error quoting it
// stays within a few hundred bytes.
const clipLimit = 150

// clip makes server- or user-supplied text safe to quote in an error: control
// and other non-printable characters (terminal escapes, invalid UTF-8,
// invisible format runes) become '?', and it is cut to clipLimit bytes.
func clip(s string) string {
	const limit = clipLimit
	cut := len(s) > limit
	if cut {
		i := limit
		for i > limit-utf8.UTFMax && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if cut {
		s += "..."
	}
	return s
}

// urlText is a URL as errors and logs quote it: without its query (a CDN URL
// carries a signature there), fragment and user info, clipped.
func urlText(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return clip(s)
	}
	if u.RawQuery != "" {
		u.RawQuery = "..."
	}
	u.Fragment, u.RawFragment, u.User = "", "", nil
	return clip(u.String())
}

// limitedReader reads at most n bytes from r, then fails with a clear error
// instead of the silent EOF of io.LimitReader (which would hand a decoder a
// truncated document).
type limitedReader struct {
	r     io.Reader
	n     int64 // bytes left
	limit int64
	what  string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s: larger than %d bytes", l.what, l.limit)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
