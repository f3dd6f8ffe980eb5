package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/esm2go/esm2go/output"
)

// Sharded runs into one dataset directory: `esm2go embed --shard i/N --out
// DIR/` (or an existing directory that is not an npy output) writes its part
// as DIR/part-<i>-of-<N>.parquet, or the npy directory DIR/part-<i>-of-<N>,
// so that pandas, pyarrow.dataset, polars and duckdb read DIR (or
// DIR/*.parquet) as one table, and `esm2go merge OUT DIR` joins it. Numbers
// are zero-padded to at least 5 digits, so name order is shard order.

// partName is the base name of shard s's part in a dataset directory,
// without an extension.
func partName(s shardSpec) string {
	w := max(5, len(fmt.Sprint(s.Count-1)))
	return fmt.Sprintf("part-%0*d-of-%0*d", w, s.Index, w, s.Count)
}

// partPattern matches the names partName gives (with the extension of
// either format).
var partPattern = regexp.MustCompile(`^part-([0-9]+)-of-([0-9]+)(\.parquet)?$`)

// isDatasetDir reports whether --out names a dataset directory for a
// sharded run: a name ending in "/" or an existing directory, unless it is
// named *.npy or is an esm2go npy output (holds metadata.json): those keep
// meaning "this shard's npy output".
func isDatasetDir(out string) bool {
	if strings.EqualFold(filepath.Ext(strings.TrimRight(out, "/")), ".npy") {
		return false
	}
	info, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return strings.HasSuffix(out, "/")
	case err != nil || !info.IsDir():
		return false
	}
	_, err = os.Stat(filepath.Join(out, "metadata.json"))
	return errors.Is(err, fs.ErrNotExist)
}

// embedOutput decides the output format and, for a sharded run whose --out
// is a dataset directory, points f.out at this shard's part inside it
// (creating the directory). The format is then --format, parquet when not
// given: "/" says "a directory of parts" here, not "npy".
func embedOutput(f *embedFlags, formatGiven bool) (output.Format, error) {
	shard, err := parseShard(f.shard, os.Getenv)
	if err != nil || shard.Count == 0 || !isDatasetDir(f.out) {
		return outputFormat(f.format, formatGiven, f.out)
	}
	format := output.Parquet
	if formatGiven {
		if format, err = output.ParseFormat(f.format); err != nil {
			return "", fmt.Errorf("invalid --format %q (want parquet or npy)", f.format)
		}
	}
	dir := strings.TrimRight(f.out, "/")
	if dir == "" {
		dir = "/"
	}
	// One level only: a mistyped parent is reported (checkOutputDir), not
	// created. Shards starting together may race to create it.
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("--out %s: %w", f.out, err)
	}
	name := partName(shard)
	if format == output.Parquet {
		name += ".parquet"
	}
	f.out = filepath.Join(dir, name)
	return format, nil
}

// expandDatasetDirs replaces each source that is a dataset directory (a
// directory that is not an npy output) by the shard parts in it, in name
// order. A directory holding a shard still in progress (a .parts
// directory), anything else than parts, or no parts at all is refused.
func expandDatasetDirs(srcs []string) ([]string, error) {
	var out []string
	for _, src := range srcs {
		info, err := os.Stat(src)
		if err != nil || !info.IsDir() {
			out = append(out, src)
			continue
		}
		if _, err := os.Stat(filepath.Join(src, "metadata.json")); err == nil {
			out = append(out, src) // an npy output
			continue
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return nil, err
		}
		var parts, other []string
		for _, e := range ents {
			n := e.Name()
			switch {
			case strings.HasPrefix(n, "."): // locks, temporaries of runs in progress
			case strings.HasSuffix(n, output.PartsSuffix):
				return nil, fmt.Errorf("%s: %s is a shard still in progress (or stopped): run that shard again to finish it", src, filepath.Join(src, n))
			case partPattern.MatchString(n):
				parts = append(parts, filepath.Join(src, n))
			default:
				other = append(other, n)
			}
		}
		if len(other) > 0 {
			return nil, fmt.Errorf("%s: holds %s, which are not shard parts (part-<i>-of-<N>[.parquet]); give the parts one by one", src, quoteList(other, 5))
		}
		if len(parts) == 0 {
			return nil, fmt.Errorf("%s: no shard parts (part-<i>-of-<N>[.parquet]) in this directory", src)
		}
		slices.Sort(parts)
		out = append(out, parts...)
	}
	return out, nil
}

// quoteList quotes the first n names and counts the rest.
func quoteList(names []string, n int) string {
	q := make([]string, 0, n+1)
	for i, s := range names {
		if i == n {
			q = append(q, fmt.Sprintf("and %d more", len(names)-n))
			break
		}
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}
