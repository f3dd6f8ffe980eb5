package weights

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzCheckContentRange parses server Content-Range headers. An accepted one
// starts at the requested byte, and its total, when given, matches the
// announced size and lies past the range.
func FuzzCheckContentRange(f *testing.F) {
	f.Add("bytes 100-199/200", int64(100), int64(200))
	f.Add("bytes 100-199/*", int64(100), int64(200))
	f.Add("bytes 100-199/200", int64(100), int64(-1))
	f.Add("bytes 0-0/1", int64(0), int64(1))
	f.Add("bytes 5-3/10", int64(5), int64(10))
	f.Add("bytes -1--1/0", int64(-1), int64(0))
	f.Add("bytes 9223372036854775806-9223372036854775807/9223372036854775807", int64(9223372036854775806), int64(-1))
	f.Add("items 1-2/3", int64(1), int64(3))
	f.Add("bytes 1-2", int64(1), int64(3))
	// Quoting multiplies non-printable runes (U+00AD becomes \u00ad): the
	// error must stay short whatever the header holds.
	f.Add(strings.Repeat("\u00ad", 300), int64(-9223372036854775808), int64(-1))
	f.Add("bytes "+strings.Repeat(`"\`, 300)+"-1/2", int64(0), int64(-1))
	f.Fuzz(func(t *testing.T, cr string, start, size int64) {
		total, err := checkContentRange(cr, start, size)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Errorf("error quotes too much: %d bytes", len(err.Error()))
			}
			return
		}
		if !strings.HasPrefix(cr, "bytes ") || start < 0 {
			t.Errorf("accepted %q from byte %d", cr, start)
		}
		if total < -1 || (size >= 0 && total != -1 && total != size) {
			t.Errorf("%q (size %d): total %d", cr, size, total)
		}
	})
}

// FuzzValidRepoPath checks that every accepted repo path stays inside the
// directory it is joined to.
func FuzzValidRepoPath(f *testing.F) {
	for _, s := range []string{"config.json", "refs/pr/1", "a/b/c.safetensors", "../../etc/x", "/etc/passwd",
		"a/../b", "a//b", "./a", `a\..\b`, "a\x00b", "", "..", ".", "a/.", "…/x", "a\u202e/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if validRepoPath(p) != nil {
			return
		}
		base := "/cache/snapshots/c"
		rel, err := filepath.Rel(base, filepath.Join(base, filepath.FromSlash(p)))
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(p) {
			t.Errorf("accepted %q, which leaves %s (rel %q, %v)", p, base, rel, err)
		}
		if strings.ContainsAny(p, "\\\x00") {
			t.Errorf("accepted %q", p)
		}
	})
}

// FuzzServerText covers what quotes or parses server-supplied header text:
// clip output is short, valid UTF-8 and free of control characters; a
// Retry-After is never negative nor above a day.
func FuzzServerText(f *testing.F) {
	for _, s := range []string{"", "120", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "\x1b[31mred", strings.Repeat("é", 150),
		"99999999999999999999", "a\xffb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := clip(s)
		if len(c) > clipLimit+len("...") || !utf8.ValidString(c) || strings.IndexFunc(c, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			t.Errorf("clip(%q) = %q", s, c)
		}
		if d := retryAfter(s); d < 0 || d > 24*time.Hour {
			t.Errorf("retryAfter(%q) = %s", s, d)
		}
	})
}
