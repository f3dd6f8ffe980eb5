package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/esm2go/esm2go/output"
	"github.com/spf13/pflag"
)

// metaShard is the metadata key a sharded run adds to its output: "i/N".
const metaShard = "shard"

type mergeFlags struct {
	overwrite bool
	quiet     bool
}

func newMergeFlagSet(f *mergeFlags) *pflag.FlagSet {
	fs := newFlagSet("merge")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace an existing OUT (a file, or a directory esm2go wrote)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print errors only")
	return fs
}

func mergeUsage() string {
	var f mergeFlags
	return "Usage: esm2go merge [flags] OUT SHARD...\n\n" +
		"Joins the outputs of a sharded run (esm2go embed --shard i/N) into OUT, in input order,\n" +
		"renumbering the index column. Every shard 0..N-1 must be given once, complete, with the\n" +
		"same model and options; outputs of unsharded runs are joined in the order given, their\n" +
		"indices kept (they must increase). A SHARD may be a directory of parts (esm2go embed\n" +
		"--shard i/N --out DIR/): it stands for the parts in it.\n\nFlags:\n" + flagDefaults(newMergeFlagSet(&f))
}

func cmdMerge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f mergeFlags
	fs := newMergeFlagSet(&f)
	usage := mergeUsage()
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usageErrorf(usage, "want OUT and at least one SHARD")
	}
	out, srcs := fs.Arg(0), fs.Args()[1:]
	for _, s := range srcs {
		if fi, err := os.Stat(s); err == nil && fi.IsDir() && within(out, s) {
			return fmt.Errorf("OUT %s is inside %s, a source being read: write the merged output beside it (inside a dataset directory it would be read as one more part)", out, s)
		}
	}
	srcs, err := expandDatasetDirs(srcs) // a directory of shard parts stands for its parts
	if err != nil {
		return err
	}
	ordered, renumber, err := orderShards(srcs)
	if err != nil {
		return err
	}
	sum, err := output.MergeContext(ctx, out, ordered, output.MergeOptions{
		Overwrite: f.overwrite, Renumber: renumber,
		DropMeta: []string{metaShard, output.RunIDKey, output.IdentityKey},
	})
	if errors.Is(err, output.ErrMetadataDiffers) {
		hint := "the outputs come from runs with other models or options: merge joins the shards of one run, or outputs made alike"
		if strings.Contains(err.Error(), `"`+metaInputBytes+`"`) {
			hint = "the shards read inputs of different sizes: every shard of a run must read the same input (was it changed or regenerated between shards?)"
		}
		return fmt.Errorf("%w (%s)", err, hint)
	}
	if err != nil {
		return withOverwriteHint(err)
	}
	if !f.quiet {
		fmt.Fprintf(stderr, "esm2go: merged %d outputs, %s rows, into %s\n", sum.Sources, groupDigits(sum.Rows), sum.Path)
	}
	return nil
}

// orderShards checks that srcs are the shards 0..N-1 of one sharded run,
// each once and complete, and returns them in shard order; outputs without
// shard metadata are returned as given (renumber false).
func orderShards(srcs []string) ([]string, bool, error) {
	type shard struct {
		path     string
		idx, cnt int
	}
	var shards []shard
	plain := 0
	for _, p := range srcs {
		if _, err := os.Stat(p + output.PartsSuffix); err == nil {
			return nil, false, fmt.Errorf("%s is not complete (%s%s exists): run that shard again to finish it", p, p, output.PartsSuffix)
		}
		r, err := output.Open(p)
		if err != nil {
			return nil, false, err
		}
		v := r.Schema().Metadata[metaShard]
		r.Close()
		if v == "" {
			plain++
			continue
		}
		i, n, _ := strings.Cut(v, "/")
		idx, err1 := strconv.Atoi(i)
		cnt, err2 := strconv.Atoi(n)
		if err1 != nil || err2 != nil || cnt < 1 || idx < 0 || idx >= cnt {
			return nil, false, fmt.Errorf("%s: invalid shard metadata %q", p, v)
		}
		shards = append(shards, shard{p, idx, cnt})
	}
	switch {
	case len(shards) == 0:
		return srcs, false, nil
	case plain > 0:
		return nil, false, fmt.Errorf("%d of the outputs are shards and %d are not: merge the shards of one run", len(shards), plain)
	}
	sort.SliceStable(shards, func(a, b int) bool { return shards[a].idx < shards[b].idx })
	n := shards[0].cnt
	seen := make([]string, n)
	for _, s := range shards {
		if s.cnt != n {
			return nil, false, fmt.Errorf("%s is shard %d/%d, %s is a shard of %d: not one run", s.path, s.idx, s.cnt, shards[0].path, n)
		}
		if seen[s.idx] != "" {
			return nil, false, fmt.Errorf("shard %d/%d given twice: %s and %s", s.idx, n, seen[s.idx], s.path)
		}
		seen[s.idx] = s.path
	}
	var missing []string
	for i, p := range seen {
		if p == "" {
			missing = append(missing, strconv.Itoa(i))
		}
	}
	if len(missing) > 0 {
		if len(missing) > 10 {
			missing = append(missing[:10], fmt.Sprintf("and %d more", len(missing)-10))
		}
		return nil, false, fmt.Errorf("shards %s of %d are missing", strings.Join(missing, ", "), n)
	}
	return seen, true, nil
}
