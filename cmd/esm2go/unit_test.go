package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esm2go/esm2go/esm"
)

func TestParseInclude(t *testing.T) {
	t.Parallel()
	inc, err := parseInclude([]string{"per_tok,MEAN", "mean", "bos"})
	if err != nil || inc != esm.Mean|esm.BOS|esm.PerTok || inc.String() != "mean,bos,per_tok" {
		t.Errorf("got %v %v", inc, err)
	}
	for _, bad := range [][]string{{""}, {"mean,"}, {"logits"}, {"contacts"}} {
		if _, err := parseInclude(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestResolveLayers(t *testing.T) {
	t.Parallel()
	cfg := esm.Config{Layers: 3}
	abs, err := resolveLayers(cfg, []int{-1, 0, 3, -4, 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{3, 0, 1}; !equal(abs, want) {
		t.Errorf("abs %v, want %v", abs, want)
	}
	for _, bad := range []int{4, -5} {
		if _, err := resolveLayers(cfg, []int{bad}); err == nil {
			t.Errorf("layer %d accepted", bad)
		}
	}
}

func TestParseDevice(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]deviceSpec{
		"auto": {kind: "auto"}, "CPU": {kind: "cpu"}, "cuda": {kind: "cuda", ords: []int{0}},
		"cuda:1": {kind: "cuda", ords: []int{1}}, "cuda:0,2,3": {kind: "cuda", ords: []int{0, 2, 3}},
		"cuda:0,0": {kind: "cuda", ords: []int{0, 0}}, "cuda:all": {kind: "cuda", all: true},
	} {
		got, err := parseDevice(in)
		if err != nil || got.kind != want.kind || got.all != want.all || !equal(got.ords, want.ords) {
			t.Errorf("%q: %+v %v", in, got, err)
		}
		if err == nil && in != "CPU" && got.String() != strings.ToLower(in) && in != "cuda" {
			t.Errorf("%q prints as %q", in, got.String())
		}
	}
	for _, bad := range []string{"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:0,", "cuda:all,1"} {
		if _, err := parseDevice(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestGroupDigits(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 652356917: "652,356,917", -1234: "-1,234"} {
		if got := groupDigits(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOnSignals(t *testing.T) {
	t.Parallel()
	sigs := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	var errb strings.Builder
	ctx, stop := onSignals(context.Background(), sigs, &errb, func(code int) { exited <- code }, false)
	sigs <- os.Interrupt
	<-ctx.Done()
	if !strings.Contains(context.Cause(ctx).Error(), "interrupt") {
		t.Errorf("cause %v", context.Cause(ctx))
	}
	select {
	case c := <-exited:
		t.Fatalf("first signal exited with %d", c)
	case <-time.After(20 * time.Millisecond):
	}
	sigs <- os.Interrupt
	select {
	case c := <-exited:
		if c != 130 {
			t.Errorf("exit code %d, want 130", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not exit")
	}
	stop()
	if !strings.Contains(errb.String(), "signal again to exit at once") {
		t.Errorf("stderr %q", errb.String())
	}
	// stop without any signal ends the watcher too.
	_, stop = onSignals(context.Background(), make(chan os.Signal), io.Discard, func(int) { t.Error("exit") }, false)
	stop()
}

// TestOnSignalsJSON: with --log-format json the signal's messages are JSON
// records too, so every line on stderr stays parseable.
func TestOnSignalsJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"embed", "--log-format", "json", "x.fa"}, true},
		{[]string{"embed", "--log-format=json"}, true},
		{[]string{"embed", "--log_format", "json"}, true},
		{[]string{"embed", "--log-format", "text"}, false},
		{[]string{"embed", "--", "--log-format=json"}, false},
		{[]string{"embed", "--log-format"}, false},
	} {
		if got := jsonLogRequested(c.args); got != c.want {
			t.Errorf("jsonLogRequested(%q) = %v, want %v", c.args, got, c.want)
		}
	}
	sigs := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	var errb syncBuilder
	ctx, stop := onSignals(context.Background(), sigs, &errb, func(code int) { exited <- code }, true)
	sigs <- os.Interrupt
	<-ctx.Done()
	sigs <- os.Interrupt
	if c := <-exited; c != 130 {
		t.Errorf("exit code %d, want 130", c)
	}
	stop()
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", errb.String())
	}
	for _, l := range lines {
		var rec struct{ Level, Msg, Signal string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Level != "WARN" || rec.Signal != "interrupt" || rec.Msg == "" {
			t.Errorf("line %q: %+v, %v", l, rec, err)
		}
	}
}

// syncBuilder is a strings.Builder safe for a writer goroutine and a reader.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOutputFormat(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		flag  string
		given bool
		out   string
		want  string // format, or an error substring
	}{
		{"parquet", false, "emb.parquet", "parquet"},
		{"parquet", false, "emb.npy", "npy"},
		{"parquet", false, "out/emb/", "npy"},
		{"parquet", false, "emb", "parquet"},
		{"npy", true, "emb", "npy"},
		{"npy", true, "emb.parquet", "contradicts"},
		{"parquet", true, "emb.npy", "contradicts"},
		{"hdf5", true, "emb", "invalid --format"},
	} {
		f, err := outputFormat(c.flag, c.given, c.out)
		got := string(f)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%+v: %q", c, got)
		}
	}
}
