package tests

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/esm2go/esm2go/esm"
	esmcuda "github.com/esm2go/esm2go/esm/cuda"
	"github.com/esm2go/esm2go/internal/cudadrv/cudatest"
	"github.com/esm2go/esm2go/internal/testutil"
	"github.com/esm2go/esm2go/weights"
)

// TestGPUParityHF checks the CUDA backend against HF transformers run on the
// same GPU in the same session (tests/gpu_parity.py writes the references):
//   - fp32 mode within 1e-4 x max|ref| (the bound);
//   - fp16 mode's error against the fp32 reference no larger than 1.5x the
//     error of HF's own fp16 run against that reference;
//
// for last-layer hidden states, mean and BOS, each input alone and all of
// them packed into batches. It runs only where ESM2GO_GPU_PARITY_DIR names
// the script's output; ESM2GO_GPU_PARITY_REPORT, when set, receives a
// markdown table of the figures.
func TestGPUParityHF(t *testing.T) {
	dir := os.Getenv("ESM2GO_GPU_PARITY_DIR")
	if dir == "" {
		t.Skip("ESM2GO_GPU_PARITY_DIR not set: GPU references come from tests/gpu_parity.py on the GPU host")
	}
	refs, _ := filepath.Glob(filepath.Join(dir, "ref", "*", "ref.safetensors"))
	if len(refs) == 0 {
		t.Fatalf("no references under %s/ref", dir)
	}
	sort.Strings(refs)
	var report strings.Builder
	report.WriteString("| model | mode | hidden | mean | bos | HF fp16 hidden | mean | bos | bound |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, ref := range refs {
		f, err := weights.OpenSafetensors(ref)
		if err != nil {
			t.Fatal(err)
		}
		name := f.Metadata["model"]
		path := f.Metadata["model_path"]
		if !filepath.IsAbs(path) {
			path = filepath.Join("..", path)
		}
		var ins []fixtureInput
		var hf16 map[string]float64
		if err := json.Unmarshal([]byte(f.Metadata["inputs"]), &ins); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(f.Metadata["hf_fp16_err"]), &hf16); err != nil {
			t.Fatal(err)
		}
		for _, prec := range []string{"fp32", "fp16"} {
			t.Run(name+"/"+prec, func(t *testing.T) {
				be := cudatest.Start(t, "CUDA backend ("+prec+")", func() (*esmcuda.Backend, error) {
					return esmcuda.New(esmcuda.Options{Precision: esm.Precision(prec)})
				})
				defer be.Close()
				m := loadModel(t, path, be)
				defer m.Close()
				got := gpuErrors(t, m, f, ins)
				for _, k := range []string{"hidden", "mean", "bos"} {
					bound := 1e-4
					if prec != "fp32" {
						bound = 1.5 * hf16[k]
					}
					if got[k] > bound {
						t.Errorf("%s %s %s: max|diff|/max|ref| %.3g > bound %.3g", name, prec, k, got[k], bound)
					}
				}
				bound := "1e-4"
				if prec != "fp32" {
					bound = "1.5 x HF fp16"
				}
				fmt.Fprintf(&report, "| %s | %s | %.2e | %.2e | %.2e | %.2e | %.2e | %.2e | %s |\n", name, prec,
					got["hidden"], got["mean"], got["bos"], hf16["hidden"], hf16["mean"], hf16["bos"], bound)
				t.Logf("%s %s on %s: %v (HF fp16: %v)", name, prec, be.Name(), got, hf16)
			})
		}
		f.Close()
	}
	t.Logf("\n%s", report.String())
	if p := os.Getenv("ESM2GO_GPU_PARITY_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// gpuErrors runs every input alone and then all packed (batches of up to
// 8192 tokens) and returns the worst relative error per output kind.
func gpuErrors(t *testing.T, m *esm.Model, f *weights.SafetensorsFile, ins []fixtureInput) map[string]float64 {
	L, D := m.Cfg.Layers, m.Cfg.Dim
	req := esm.Request{Layers: []int{L}, Reprs: esm.Mean | esm.BOS | esm.PerTok}
	worst := map[string]float64{}
	get := func(n string) []float32 {
		v, err := f.Tensors[n].Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	check := func(name string, seq, start, T int, out *esm.Output) {
		for k, pair := range map[string][2][]float32{
			"hidden": {out.PerTok[L][start*D : (start+T)*D], get(name + ".hidden")},
			"mean":   {out.Mean[L][seq*D : (seq+1)*D], get(name + ".mean")},
			"bos":    {out.BOS[L][seq*D : (seq+1)*D], get(name + ".bos")},
		} {
			worst[k] = math.Max(worst[k], testutil.MaxRel(pair[0], pair[1]))
		}
	}
	toks := make([][]int32, len(ins))
	for i, in := range ins {
		v, err := f.Tensors[in.Name+".tokens"].Int32()
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = v
	}
	var b esm.Batch
	var out esm.Output
	for i, in := range ins {
		b.Reset()
		b.Append(toks[i], 0)
		if err := m.Forward(&b, req, &out); err != nil {
			t.Fatal(err)
		}
		check(in.Name, 0, 0, len(toks[i]), &out)
	}
	b.Reset()
	var idx []int
	flush := func() {
		if err := m.Forward(&b, req, &out); err != nil {
			t.Fatal(err)
		}
		for j, i := range idx {
			check(ins[i].Name, j, b.Seqlens.Start(j), len(toks[i]), &out)
		}
		b.Reset()
		idx = idx[:0]
	}
	for i := len(ins) - 1; i >= 0; i-- {
		if len(b.Tokens)+len(toks[i]) > 8192 {
			flush()
		}
		b.Append(toks[i], 0)
		idx = append(idx, i)
	}
	flush()
	return worst
}
