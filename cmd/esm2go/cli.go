package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); otherwise
// it comes from the module's build information.
var version = ""

// Version returns the esm2go version: the link-time value, the module
// version, or "devel" plus the VCS revision when built from a checkout.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	v := "devel"
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += "-" + rev + modified
	}
	return v
}

const mainUsage = `esm2go computes ESM2 protein language model embeddings from FASTA files.

Usage:
  esm2go embed [flags] FASTA...   embed every record of the FASTA files (plain or gzip, "-" = stdin)
  esm2go merge OUT SHARD...       join the outputs of a sharded run (embed --shard i/N)
  esm2go score [flags] FASTA...   score variants of the wild types (--mutations TABLE or --scan)
  esm2go contacts -o DIR FASTA... predict residue-residue contact maps (fair-esm's contact head)
  esm2go info [--model M]         load a model and print its shape and contents
  esm2go version                  print the version
  esm2go help [command]           print this help, or a command's flags

Models: a Hugging Face id (facebook/esm2_t33_650M_UR50D), a directory with
config.json and model.safetensors, or a fair-esm .pt file. Ids are looked up in
the Hugging Face and torch hub caches and downloaded when missing.
`

// usageError is a command-line mistake: reported with the usage, status 2.
type usageError struct {
	err   error
	usage string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(usage, format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...), usage: briefUsage(usage)}
}

// briefUsage is what follows a command-line error: a short usage as it is;
// of a command's long flag list (embed, contacts, score) only its synopsis
// and where the flags are, so that the error stays on screen.
func briefUsage(usage string) string {
	synopsis, _, _ := strings.Cut(usage, "\n")
	cmd, ok := strings.CutPrefix(synopsis, "Usage: esm2go ")
	if !ok || strings.Count(usage, "\n") <= 15 {
		return usage
	}
	cmd, _, _ = strings.Cut(cmd, " ")
	return fmt.Sprintf("%s\nRun 'esm2go help %s' for the flags.\n", synopsis, cmd)
}

// run is the whole program: it parses args (without the program name), runs
// the command and returns the exit status: 0 on success, 1 on an error, 2 on
// a command-line error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if jsonErrorLine(stderr, err, 2) { // --log-format json (progress.go)
			return 2
		}
		fmt.Fprintf(stderr, "esm2go: %s\n", oneLine(err.Error()))
		if ue.usage != "" {
			fmt.Fprintf(stderr, "\n%s", ue.usage)
		}
		return 2
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// The error says where the rows written so far went; 130 is what a
		// shell reports for a process stopped by SIGINT.
		if jsonErrorLine(stderr, err, 130) {
			return 130
		}
		fmt.Fprintf(stderr, "esm2go: interrupted: %s\n", oneLine(err.Error()))
		return 130
	}
	if jsonErrorLine(stderr, err, 1) {
		return 1
	}
	fmt.Fprintf(stderr, "esm2go: %s\n", oneLine(err.Error()))
	return 1
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{err: errors.New("no command given"), usage: mainUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "embed":
		return cmdEmbed(ctx, rest, stdout, stderr)
	case "info":
		return cmdInfo(ctx, rest, stdout, stderr)
	case "merge":
		return cmdMerge(ctx, rest, stdout, stderr)
	case "score":
		return cmdScore(ctx, rest, stdout, stderr)
	case "contacts":
		return cmdContacts(ctx, rest, stdout, stderr)
	case "version", "--version":
		if len(rest) > 0 {
			return usageErrorf(mainUsage, "version takes no arguments")
		}
		fmt.Fprintf(stdout, "esm2go %s (%s, %s/%s)\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, mainUsage)
			return nil
		}
		switch rest[0] {
		case "embed":
			fmt.Fprint(stdout, embedUsage())
		case "info":
			fmt.Fprint(stdout, infoUsage())
		case "merge":
			fmt.Fprint(stdout, mergeUsage())
		case "score":
			fmt.Fprint(stdout, scoreUsage())
		case "contacts":
			fmt.Fprint(stdout, contactsUsage())
		case "version", "help":
			fmt.Fprint(stdout, mainUsage)
		default:
			return usageErrorf(mainUsage, "unknown command %q", rest[0])
		}
		return nil
	default:
		return usageErrorf(mainUsage, "unknown command %q", cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// accepts fair-esm's underscore spellings (--repr_layers) as well.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(n, "_", "-"))
	})
	fs.SortFlags = false
	return fs
}

// parseFlags parses args; -h/--help prints usage to stdout and returns
// pflag.ErrHelp.
func parseFlags(fs *pflag.FlagSet, args []string, usage string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return err
		}
		// A mistyped flag: a hint and where the flags are, not the whole
		// usage.
		if name, ok := strings.CutPrefix(err.Error(), "unknown flag: --"); ok {
			hint := ""
			if near := nearestFlag(fs, name); near != "" {
				hint = fmt.Sprintf(" (did you mean --%s?)", near)
			}
			return &usageError{err: fmt.Errorf("%w%s", err, hint),
				usage: fmt.Sprintf("Run 'esm2go help %s' for the flags.\n", fs.Name())}
		}
		return &usageError{err: err, usage: briefUsage(usage)}
	}
	return nil
}

// nearestFlag returns the flag of fs closest to name (edit distance at most
// a third of its length, at least 2), or "".
func nearestFlag(fs *pflag.FlagSet, name string) string {
	best, bestD := "", max(2, len(name)/3)+1
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func flagDefaults(fs *pflag.FlagSet) string {
	return fs.FlagUsagesWrapped(100)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
