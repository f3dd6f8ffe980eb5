package embed

import (
	"bufio"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/esm2go/esm2go/data"
	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/esm/cpu"
	"github.com/esm2go/esm2go/esm/esmtest"
	"github.com/esm2go/esm2go/output"
)

// writeSynthetic writes n records with lognormal(median 300, sigma 0.6)
// lengths clipped to 30..1022 over the 20 standard residues, 60 per line.
func writeSynthetic(tb testing.TB, path string, n int) int64 {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(42, 42))
	var residues int64
	for i := 0; i < n; i++ {
		l := int(math.Round(300 * math.Exp(0.6*r.NormFloat64())))
		l = min(max(l, 30), 1022)
		seq := esmtest.Sequence(r, l)
		residues += int64(l)
		w.WriteString(">seq")
		w.WriteString(string(rune('A' + i%26)))
		w.WriteString(" synthetic\n")
		for off := 0; off < l; off += 60 {
			w.Write(seq[off:min(off+60, l)])
			w.WriteByte('\n')
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return residues
}

// BenchmarkLoader measures the stages before the model: readers, tokenizer
// and packer, with batches returned as soon as they are packed.
func BenchmarkLoader(b *testing.B) {
	inputs := map[string]string{}
	synth := filepath.Join(b.TempDir(), "synthetic.fasta")
	writeSynthetic(b, synth, 200_000) // ~66M residues, ~80 MB
	inputs["synthetic"] = synth
	if _, err := os.Stat("/work/shared/data/prokka_viruses_sprot.fasta"); err == nil {
		inputs["prokka_viruses_sprot"] = "/work/shared/data/prokka_viruses_sprot.fasta"
	} else if _, err := os.Stat("../../shared/data/prokka_viruses_sprot.fasta"); err == nil {
		inputs["prokka_viruses_sprot"] = "../../shared/data/prokka_viruses_sprot.fasta"
	}
	for name, path := range inputs {
		b.Run(name, func(b *testing.B) {
			var residues int64
			for b.Loop() {
				residues = runLoader(b, path)
			}
			b.ReportMetric(float64(residues)*float64(b.N)/b.Elapsed().Seconds(), "residues/s")
		})
	}
}

func runLoader(b *testing.B, path string) int64 {
	ctx := context.Background()
	rd, err := data.Open(ctx, []string{path}, data.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	o, _, err := prepare(esm.Config{Layers: 1}, Options{Inputs: []string{path}, Out: "unused", ToksPerBatch: 65536})
	if err != nil {
		b.Fatal(err)
	}
	p := &pipeline{o: o, rd: rd, ready: make(chan *job, 4), free: make(chan *job, 4), wch: make(chan writerMsg, 64), advanced: make(chan struct{}, 1)}
	p.budget.Store(int64(o.ToksPerBatch))
	p.nextIndex.Store(math.MaxInt64) // no writer here: never hold the packer back
	for i := 0; i < cap(p.free); i++ {
		p.free <- &job{}
	}
	done := make(chan error, 1)
	go func() { defer close(p.ready); done <- p.pack(ctx) }()
	go func() {
		for range p.wch {
		}
	}()
	var residues int64
	for j := range p.ready {
		residues += int64(len(j.batch.Tokens) - 2*j.batch.NumSeqs())
		p.free <- j
	}
	close(p.wch)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return residues
}

// BenchmarkPipelineOverhead compares `embed` end to end on the CPU backend
// with the bare forward pass over the same batches (8M shape, random
// weights, 2,000 synthetic records): the overhead metric is the pipeline's
// extra time in percent.
func BenchmarkPipelineOverhead(b *testing.B) {
	cfg, _ := esmtest.Config("8M")
	be := cpu.New(cpu.Options{})
	defer be.Close()
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 1), be)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	dir := b.TempDir()
	path := filepath.Join(dir, "in.fasta")
	writeSynthetic(b, path, 300)
	opts := Options{Inputs: []string{path}, Format: output.NPY, ToksPerBatch: 4096, Overwrite: true}

	// The same batches, built once, for the bare forward pass.
	var batches []*esm.Batch
	{
		ctx := context.Background()
		rd, _ := data.Open(ctx, []string{path}, data.Options{})
		o, _, _ := prepare(m.Cfg, Options{Inputs: []string{path}, Out: filepath.Join(dir, "unused"), ToksPerBatch: 4096})
		p := &pipeline{o: o, rd: rd, ready: make(chan *job, 1<<16), free: make(chan *job, 1<<16), wch: make(chan writerMsg, 1<<16), advanced: make(chan struct{}, 1)}
		p.budget.Store(int64(o.ToksPerBatch))
		p.nextIndex.Store(math.MaxInt64)
		for i := 0; i < 1<<12; i++ {
			p.free <- &job{}
		}
		if err := p.pack(ctx); err != nil {
			b.Fatal(err)
		}
		rd.Close()
		close(p.ready)
		for j := range p.ready {
			batches = append(batches, &j.batch)
		}
	}
	req := esm.Request{Layers: []int{cfg.Layers}, Reprs: esm.Mean}
	var bare, piped time.Duration
	for b.Loop() {
		t0 := time.Now()
		var out esm.Output
		for _, bt := range batches {
			if err := m.Forward(bt, req, &out); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		opts.Out = filepath.Join(dir, "out")
		if _, err := Run(context.Background(), m, opts); err != nil {
			b.Fatal(err)
		}
		bare += t1.Sub(t0)
		piped += time.Since(t1)
	}
	b.ReportMetric(100*(piped.Seconds()-bare.Seconds())/bare.Seconds(), "overhead%")
	b.ReportMetric(bare.Seconds()/float64(b.N), "bare-s/op")
	b.ReportMetric(piped.Seconds()/float64(b.N), "embed-s/op")
}

// hollowBackend is the CPU backend with the model's arithmetic left out:
// Embed, LayerNorm, Linear, RotaryQK, Attention and GELU do nothing, so a
// forward pass costs only the pooling and the copies of its outputs, and
// a run measures what the pipeline around the model (reading, packing,
// copying rows out, writing) can sustain.
type hollowBackend struct{ *cpu.Backend }

func (hollowBackend) Embed(x, table esm.Tensor, D int, maskToken int32) error { return nil }
func (hollowBackend) LayerNorm(out, in, w, bias esm.Tensor, D int, eps float32) error {
	return nil
}
func (hollowBackend) Linear(out, in, w, bias esm.Tensor, K, N int, accumulate bool) error {
	return nil
}
func (hollowBackend) RotaryQK(qkv esm.Tensor, H, HD int, qScale float32) error { return nil }
func (hollowBackend) Attention(out, qkv esm.Tensor, H, HD int) error           { return nil }
func (hollowBackend) GELU(x esm.Tensor, n int) error                           { return nil }

// BenchmarkPipelinePerTok runs `embed` on a model of the 650M model's width
// (D = 1280, one layer) whose arithmetic is left out (hollowBackend), over
// 600 synthetic records, with --include mean and per_tok, in both formats,
// through the resumable output (a commit every 100 records), per-token
// also stored as float16: the pipeline's ceiling for per-token output on
// this machine, in records/s and GB/s of float32 values (the embeddings
// per second, whatever the dtype stores), beside the disk's speed (1 MiB
// writes and an fsync) measured in the same run.
func BenchmarkPipelinePerTok(b *testing.B) {
	cfg, _ := esmtest.Config("650M")
	cfg.Layers = 1
	cpuBe := cpu.New(cpu.Options{})
	defer cpuBe.Close()
	m, err := esm.NewModel(cfg, esmtest.Random(cfg, 1), hollowBackend{cpuBe})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	dir := b.TempDir()
	path := filepath.Join(dir, "in.fasta")
	residues := writeSynthetic(b, path, 600)
	perTokBytes := 4 * float64(cfg.Dim) * float64(residues)

	b.Run("disk", func(b *testing.B) {
		buf := make([]byte, 1<<20)
		for b.Loop() {
			f, err := os.Create(filepath.Join(dir, "raw"))
			if err != nil {
				b.Fatal(err)
			}
			for done := 0.0; done < perTokBytes; done += float64(len(buf)) {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			os.Remove(f.Name())
		}
		b.ReportMetric(perTokBytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	cases := []struct {
		name string
		inc  esm.Repr
		d    output.DType
	}{{"mean/", esm.Mean, ""}, {"per_tok/", esm.PerTok, ""}, {"per_tok_f16/", esm.PerTok, output.Float16}}
	for _, cs := range cases {
		inc := cs.inc
		for _, f := range []output.Format{output.Parquet, output.NPY} {
			b.Run(cs.name+string(f), func(b *testing.B) {
				opts := Options{Inputs: []string{path}, Format: f, Include: inc, Layers: []int{1}, ToksPerBatch: 8192,
					Overwrite: true, Out: filepath.Join(dir, "out"), ChunkRows: 100, DType: cs.d}
				cpu0 := cpuSeconds()
				for b.Loop() {
					if _, err := Run(context.Background(), m, opts); err != nil {
						b.Fatal(err)
					}
				}
				// CPU time, all goroutines: on a shared machine it says what
				// a run cost when the wall time says how busy the machine was.
				b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/op")
				b.ReportMetric(600*float64(b.N)/b.Elapsed().Seconds(), "records/s")
				if inc == esm.PerTok {
					b.ReportMetric(perTokBytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				}
			})
		}
	}
}
