package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/weights"
	"github.com/spf13/pflag"
)

func newInfoFlagSet(model *string) *pflag.FlagSet {
	fs := newFlagSet("info")
	fs.StringVar(model, "model", defaultModel, "model: Hugging Face id, directory (config.json + model.safetensors) or fair-esm .pt")
	return fs
}

func infoUsage() string {
	var m string
	return "Usage: esm2go info [--model M]\n\n" +
		"Loads a model and prints its shape, parameter count, dtypes and heads.\n\nFlags:\n" +
		flagDefaults(newInfoFlagSet(&m))
}

func cmdInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var model string
	fs := newInfoFlagSet(&model)
	usage := infoUsage()
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf(usage, "info takes no arguments (use --model %s)", fs.Arg(0))
	}
	ck, cfg, err := openModel(ctx, model, stderr)
	if err != nil {
		return err
	}
	defer ck.Close()
	return writeInfo(stdout, ck, cfg)
}

// writeInfo prints what a checkpoint holds, one "key: value" per line.
func writeInfo(w io.Writer, ck *weights.Checkpoint, cfg esm.Config) error {
	var params, buffers int64
	dtypes := map[weights.DType]int{}
	for name, t := range ck.Tensors {
		n := int64(t.NumElements())
		if strings.HasSuffix(name, ".inv_freq") { // rotary buffers, not parameters
			buffers += n
		} else {
			params += n
		}
		dtypes[t.DType]++
	}
	var dts []string
	for dt, n := range dtypes {
		dts = append(dts, fmt.Sprintf("%s (%d tensors)", dt, n))
	}
	slices.Sort(dts)

	hd := cfg.HeadDim()
	rotary := fmt.Sprintf("formula 1/10000^(2i/%d) (no %s in the checkpoint)", hd, esm.RotaryInvFreqName)
	if t, ok := ck.Tensors[esm.RotaryInvFreqName]; ok {
		v, err := t.Float32()
		if err != nil {
			return fmt.Errorf("%s: %w", esm.RotaryInvFreqName, err)
		}
		var d float64
		for i, f := range esm.DefaultInvFreq(hd) {
			if i < len(v) {
				d = math.Max(d, math.Abs(float64(v[i]-f)))
			}
		}
		rotary = fmt.Sprintf("from the checkpoint (%d values, max |diff| from the fp32 formula %.2g)", len(v), d)
	}
	has := func(prefix string) string {
		for name := range ck.Tensors {
			if strings.HasPrefix(name, prefix) {
				return "yes"
			}
		}
		return "no"
	}

	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k string, format string, a ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("source", "%s", ck.Path)
	row("format", "%s", ck.Format)
	row("layers", "%d", cfg.Layers)
	row("dim", "%d", cfg.Dim)
	row("heads", "%d", cfg.Heads)
	row("head dim", "%d", hd)
	row("ffn", "%d", cfg.FFN)
	row("vocab", "%d", cfg.Vocab)
	row("parameters", "%s (%s)", groupDigits(params), humanCount(params))
	row("buffers", "%s (rotary inv_freq)", groupDigits(buffers))
	row("tensors", "%d", len(ck.Tensors))
	row("dtypes", "%s", strings.Join(dts, ", "))
	row("token dropout", "%v", cfg.TokenDropout)
	row("layer norm eps", "%g", cfg.LayerNormEps)
	row("rotary inv_freq", "%s", rotary)
	row("lm head", "%s", has("lm_head."))
	row("contact head", "%s", has("contact_head."))
	return tw.Flush()
}

// groupDigits writes n with thousands separators: 7840794 → 7,840,794.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + groupDigits(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// humanCount writes n as 7.8M, 652M, 2.8B.
func humanCount(n int64) string {
	f := float64(n)
	switch {
	case f >= 1e9:
		return fmt.Sprintf("%.3gB", f/1e9)
	case f >= 1e6:
		return fmt.Sprintf("%.3gM", f/1e6)
	case f >= 1e3:
		return fmt.Sprintf("%.3gK", f/1e3)
	}
	return fmt.Sprint(n)
}
