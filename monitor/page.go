package monitor

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// This file serves the live page: at http://Addr/ a self-contained HTML page
// (inline JS drawing SVG, no external resources) that polls
// /metrics.json about once a second and plots the run's windows.

//go:embed page.html
var pageHTML []byte

// PageWindows is how many windows /metrics.json keeps (the newest); older
// ones are dropped from the page's plots, never from the other outputs.
// At one window every few seconds that is hours of a run; each kept window
// costs a few hundred bytes.
const PageWindows = 2000

// Setting is one line of the run's settings shown on the live page (model,
// device, layers, ...), in the order given.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// pagePoint is what the page plots of one window (a subset of Record).
type pagePoint struct {
	Window      int       `json:"window"`
	ElapsedS    float64   `json:"elapsed_s"`
	Final       bool      `json:"final,omitempty"`
	Records     int64     `json:"records"`
	Sequences   int64     `json:"sequences"`
	Skipped     int64     `json:"skipped"`
	SeqPerS     float64   `json:"seq_per_s"`
	TokPerS     float64   `json:"tok_per_s"`
	LoaderWait  float64   `json:"loader_wait_frac"`
	WriterWait  float64   `json:"writer_wait_frac"`
	Compute     float64   `json:"compute_frac"`
	QueueDepth  int       `json:"queue_depth"`
	ReaderQueue int       `json:"reader_queue"`
	RSSBytes    *int64    `json:"rss_bytes,omitempty"`
	GPUs        []GPUStat `json:"gpus,omitempty"`
	Warnings    []string  `json:"warnings,omitempty"`
}

// pageHistory is the page's bounded window history and the run's settings.
// add runs on the monitor goroutine, the handlers on the server's.
type pageHistory struct {
	mu       sync.Mutex
	max      int
	points   []pagePoint // ring of at most max points; points[start] is the oldest
	start    int
	total    int // windows seen
	settings []Setting
}

func newPageHistory(max int) *pageHistory {
	return &pageHistory{max: max}
}

// add keeps r's figures, dropping the oldest window when full.
func (h *pageHistory) add(r *Record) {
	pt := pagePoint{Window: r.Window, ElapsedS: r.ElapsedS, Final: r.Final,
		Records: r.Records, Sequences: r.Sequences, Skipped: r.Skipped,
		SeqPerS: r.SeqPerS, TokPerS: r.TokPerS,
		LoaderWait: r.LoaderWaitFrac, WriterWait: r.WriterWaitFrac, Compute: r.ComputeFrac,
		QueueDepth: r.QueueDepth, ReaderQueue: r.ReaderQueue, RSSBytes: r.RSSBytes,
		GPUs: r.GPUs, Warnings: r.Warnings}
	// r.GPUs and r.Warnings are not changed after the record is made; the
	// slices are shared, not copied.
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total++
	if len(h.points) < h.max {
		h.points = append(h.points, pt)
		return
	}
	h.points[h.start] = pt
	h.start = (h.start + 1) % len(h.points)
}

func (h *pageHistory) setSettings(s []Setting) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.settings = append([]Setting(nil), s...)
}

// pageData is the body of /metrics.json.
type pageData struct {
	// Windows counts every window seen; Points holds the newest of them
	// (at most PageWindows), those after ?since=N when given.
	Windows  int         `json:"windows"`
	Max      int         `json:"max_points"`
	Settings []Setting   `json:"settings"`
	Points   []pagePoint `json:"points"`
}

// snapshot returns the kept windows numbered above since (all with since
// <= 0), oldest first.
func (h *pageHistory) snapshot(since int) pageData {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := pageData{Windows: h.total, Max: h.max, Settings: h.settings, Points: []pagePoint{}}
	if d.Settings == nil {
		d.Settings = []Setting{}
	}
	n := len(h.points)
	for i := 0; i < n; i++ {
		pt := h.points[(h.start+i)%n]
		if pt.Window > since {
			d.Points = append(d.Points, pt)
		}
	}
	return d
}

// register adds the page ("/") and its data ("/metrics.json") to mux.
func (h *pageHistory) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// The page loads nothing from elsewhere; say so to the browser too.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
		w.Write(pageHTML)
	})
	mux.HandleFunc("GET /metrics.json", func(w http.ResponseWriter, r *http.Request) {
		since := 0
		if s := r.URL.Query().Get("since"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				http.Error(w, "since: want a window number", http.StatusBadRequest)
				return
			}
			since = n
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(h.snapshot(since))
	})
}

// SetSettings sets the run's settings the live page shows (model, device,
// layers, include, output, ...). Safe to call at any time, from any
// goroutine.
func (m *Monitor) SetSettings(s []Setting) {
	m.prom.page.setSettings(s)
}
