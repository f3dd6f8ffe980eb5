package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pageRecord is a window with two GPUs.
func pageRecord(w int) *Record {
	rss := int64(100+w) << 20
	return &Record{Window: w, ElapsedS: float64(w), Records: int64(8 * w), Sequences: int64(8 * w),
		SeqPerS: 8, TokPerS: 816, LoaderWaitFrac: 0.25, WriterWaitFrac: 0.05, ComputeFrac: 0.7,
		QueueDepth: w % 3, ReaderQueue: 2, RSSBytes: &rss,
		GPUs: []GPUStat{{Index: 0, UtilPct: 70, MemUsed: 3 << 30, MemTotal: 80 << 30},
			{Index: 1, UtilPct: 40, MemUsed: 5 << 30, MemTotal: 80 << 30}}}
}

func getJSON(t *testing.T, url string) pageData {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var d pageData
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return d
}

func TestPageHistoryBounded(t *testing.T) {
	h := newPageHistory(5)
	for w := 1; w <= 12; w++ {
		h.add(pageRecord(w))
	}
	d := h.snapshot(0)
	if d.Windows != 12 || len(d.Points) != 5 {
		t.Fatalf("windows %d, %d points; want 12 and the newest 5", d.Windows, len(d.Points))
	}
	for i, p := range d.Points {
		if p.Window != 8+i {
			t.Errorf("point %d is window %d, want %d (oldest first)", i, p.Window, 8+i)
		}
	}
	if d := h.snapshot(10); len(d.Points) != 2 || d.Points[0].Window != 11 {
		t.Errorf("since=10: %+v", d.Points)
	}
	if d := h.snapshot(12); len(d.Points) != 0 || d.Points == nil {
		t.Errorf("since=12: %v (want an empty list, not null)", d.Points)
	}
}

func TestPageEndpoints(t *testing.T) {
	m, err := New(context.Background(), Options{Every: 1, Addr: "127.0.0.1:0", NoGPU: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.SetSettings([]Setting{{"model", "facebook/esm2_t6_8M_UR50D"}, {"device", "cpu"}})
	base := "http://" + m.Addr()

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	// Self-contained: nothing loaded from elsewhere.
	if loc := regexp.MustCompile(`(?i)(src|href)\s*=|@import|url\(`).FindIndex(body); loc != nil {
		t.Errorf("the page loads an external resource: %q", body[loc[0]:min(loc[1]+40, len(body))])
	}
	if resp, err := http.Get(base + "/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /nothing: %v %v, want 404", resp.Status, err)
	}
	if resp, err := http.Get(base + "/metrics.json?since=x"); err != nil || resp.StatusCode != 400 {
		t.Errorf("GET /metrics.json?since=x: %v %v, want 400", resp.Status, err)
	}

	feed(m, summaries(3, 0.5))
	var d pageData
	for i := 0; i < 200; i++ {
		if d = getJSON(t, base+"/metrics.json"); len(d.Points) >= 3 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(d.Points) < 3 || d.Points[0].Window != 1 || d.Points[0].SeqPerS <= 0 || d.Max != PageWindows {
		t.Errorf("metrics.json after 3 windows: %+v", d)
	}
	if len(d.Settings) != 2 || d.Settings[1] != (Setting{"device", "cpu"}) {
		t.Errorf("settings %+v", d.Settings)
	}
}

// chromium returns the headless browser to test with, or skips (fails with
// ESM2GO_REQUIRE_CHROMIUM=1). ESM2GO_CHROMIUM names one explicitly.
func chromium(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"}
	if p := os.Getenv("ESM2GO_CHROMIUM"); p != "" {
		names = []string{p}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("no headless browser (looked for %s; apt-get install chromium, or set ESM2GO_CHROMIUM)", strings.Join(names, ", "))
	if os.Getenv("ESM2GO_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(msg + "; ESM2GO_REQUIRE_CHROMIUM=1")
	}
	t.Skip(msg)
	return ""
}

// dumpDOM loads url in headless chromium, lets the page run for budget of
// virtual time (its polls included) and returns the DOM it ends with.
func dumpDOM(t *testing.T, browser, url string, budget time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(),
		"--virtual-time-budget="+strconv.Itoa(int(budget.Milliseconds())), "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", browser, err, stderr.String())
	}
	return string(out)
}

// bodyData returns the integer data-NAME attribute of the dumped <body>.
func bodyData(t *testing.T, dom, name string) int {
	t.Helper()
	m := regexp.MustCompile(`<body[^>]*\bdata-` + name + `="(\d+)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no data-%s on <body> in the dumped page:\n%.2000s", name, dom)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// polylines returns the number of points of each plotted line, by chart
// and series ("gpu_util/GPU 1").
func polylines(dom string) map[string]int {
	out := map[string]int{}
	for _, chart := range regexp.MustCompile(`<div class="chart" id="chart-([a-z_]+)">`).FindAllStringSubmatchIndex(dom, -1) {
		id := dom[chart[2]:chart[3]]
		rest := dom[chart[1]:]
		if end := strings.Index(rest, `<div class="chart"`); end >= 0 {
			rest = rest[:end]
		}
		for _, pl := range regexp.MustCompile(`<polyline [^>]*data-series="([^"]+)" data-n="(\d+)"`).FindAllStringSubmatch(rest, -1) {
			n, _ := strconv.Atoi(pl[2])
			out[id+"/"+pl[1]] = n
		}
	}
	return out
}

// TestPageInBrowser loads the live page in headless chromium twice, with
// more windows the second time: the plots grow, every chart draws its
// series (one per GPU where per GPU), and no script error is caught.
func TestPageInBrowser(t *testing.T) {
	t.Parallel() // most of its time is the browser starting
	browser := chromium(t)
	h := newPageHistory(PageWindows)
	h.setSettings([]Setting{{"model", "facebook/esm2_t33_650M_UR50D"}, {"device", "cuda:0,1"},
		{"layers", "33"}, {"include", "mean"}, {"output", "emb <&> .parquet"}})
	mux := http.NewServeMux()
	h.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for w := 1; w <= 3; w++ {
		h.add(pageRecord(w))
	}
	// 1.5 s of virtual time: the first poll and the next (every 1 s).
	dom1 := dumpDOM(t, browser, srv.URL+"/", 1500*time.Millisecond)
	for w := 4; w <= 10; w++ {
		h.add(pageRecord(w))
	}
	dom2 := dumpDOM(t, browser, srv.URL+"/", 1500*time.Millisecond)

	for i, dom := range []string{dom1, dom2} {
		if n := bodyData(t, dom, "errors"); n != 0 {
			m := regexp.MustCompile(`(?s)<pre id="errors">(.*?)</pre>`).FindStringSubmatch(dom)
			t.Errorf("dump %d: %d script errors: %v", i+1, n, m)
		}
		if bodyData(t, dom, "polls") == 0 {
			t.Errorf("dump %d: the page never got an answer from metrics.json", i+1)
		}
	}
	if p1, p2 := bodyData(t, dom1, "points"), bodyData(t, dom2, "points"); p1 != 3 || p2 != 10 {
		t.Errorf("points plotted: %d then %d, want 3 then 10", p1, p2)
	}
	l1, l2 := polylines(dom1), polylines(dom2)
	for _, s := range []string{"records/records/s", "tokens/tokens/s", "gpu_util/GPU 0", "gpu_util/GPU 1",
		"gpu_mem/GPU 0", "gpu_mem/GPU 1", "wait/loader wait", "wait/writer wait", "queues/packed batches ready",
		"queues/FASTA blocks waiting", "rss/RSS"} {
		if l1[s] != 3 || l2[s] != 10 {
			t.Errorf("line %q: %d then %d points, want 3 then 10", s, l1[s], l2[s])
		}
	}
	for _, want := range []string{"<td>device</td><td>cuda:0,1</td>", "<td>output</td><td>emb &lt;&amp;&gt; .parquet</td>",
		"80 embedded, 0 skipped of 80 records read"} {
		if !strings.Contains(dom2, want) {
			t.Errorf("no %q in the second dump", want)
		}
	}
}
