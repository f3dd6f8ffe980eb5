package cudatest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Arch is the architecture the sources are compiled for: the H100/H200 the
// GPU tests run on (NVRTC compiles for the device at hand at run time).
const Arch = "sm_90"

// Variant is one compilation of a source: a name for the log and the extra
// options (defines) the backend passes to NVRTC for it. SM90a marks a
// module with sm_90a instructions (wgmma): it is compiled whole for sm_90a
// where the installed nvcc knows that architecture (CUDA 12 and later) and
// otherwise goes through the front end only (nvcc -ptx for sm_90, no
// ptxas: nvcc 11.8 cannot assemble wgmma, but the C++ is still checked).
type Variant struct {
	Name  string
	Opts  []string
	SM90a bool
}

// knowsSM90a reports whether nvcc compiles an empty kernel for sm_90a
// (its architecture lists are not the same from one release to another).
func knowsSM90a(nvcc, dir string) bool {
	src := filepath.Join(dir, "probe90a.cu")
	if os.WriteFile(src, []byte("__global__ void probe() {}\n"), 0o644) != nil {
		return false
	}
	return exec.Command(nvcc, "-arch=sm_90a", "-cubin", "-allow-unsupported-compiler", "-o", filepath.Join(dir, "probe90a.cubin"), src).Run() == nil
}

// CompileNVCC compiles src once per variant with `nvcc -arch=sm_90 -cubin`
// (sm_90a, or the front end only, for SM90a variants: see Variant)
// (the variants in parallel), failing t with nvcc's output on an error and
// logging each kernel's registers and any spills (ptxas -v). The host
// compiler only preprocesses here, so a distribution's nvcc older than its
// gcc is let through (-allow-unsupported-compiler). It skips t when
// nvcc is not on PATH or under $CUDA_HOME/bin.
func CompileNVCC(t *testing.T, src, file string, variants ...Variant) {
	t.Helper()
	nvcc := findNVCC()
	if nvcc == "" {
		t.Skip("nvcc not found (PATH, $CUDA_HOME/bin): CUDA sources not compile-checked here")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out string
		err error
	}
	res := make([]result, len(variants))
	ptxOnly := make([]bool, len(variants))
	sm90a := false
	for _, v := range variants {
		if v.SM90a {
			sm90a = knowsSM90a(nvcc, dir)
			break
		}
	}
	var wg sync.WaitGroup
	for i, v := range variants {
		ptxOnly[i] = v.SM90a && !sm90a
		wg.Go(func() {
			arch := Arch
			if v.SM90a {
				arch = "sm_90a"
			}
			args := []string{"-arch=" + arch, "-cubin", "-o", filepath.Join(dir, fmt.Sprintf("v%d.cubin", i)),
				"-Xptxas", "-v", "-allow-unsupported-compiler"}
			if ptxOnly[i] {
				args = []string{"-arch=" + Arch, "-ptx", "-o", filepath.Join(dir, fmt.Sprintf("v%d.ptx", i)), "-allow-unsupported-compiler"}
			}
			args = append(args, v.Opts...)
			out, err := exec.Command(nvcc, append(args, path)...).CombinedOutput()
			res[i] = result{string(out), err}
		})
	}
	wg.Wait()
	for i, v := range variants {
		if res[i].err != nil {
			t.Errorf("nvcc %s (%s): %v\n%s", file, v.Name, res[i].err, res[i].out)
			continue
		}
		if ptxOnly[i] {
			ptx, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("v%d.ptx", i)))
			if err != nil {
				t.Errorf("nvcc %s (%s): %v", file, v.Name, err)
				continue
			}
			var entries []string
			for _, m := range ptxEntryRe.FindAllSubmatch(ptx, -1) {
				entries = append(entries, string(m[1]))
			}
			if len(entries) == 0 {
				t.Errorf("nvcc %s (%s): no kernels in the PTX", file, v.Name)
			}
			t.Logf("%s (%s): front end only (PTX): %d kernels: %s", file, v.Name, len(entries), strings.Join(entries, ", "))
			continue
		}
		t.Logf("%s (%s): %s", file, v.Name, summarize(res[i].out))
	}
}

func findNVCC() string {
	if p, err := exec.LookPath("nvcc"); err == nil {
		return p
	}
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if d := os.Getenv(env); d != "" {
			p := filepath.Join(d, "bin", "nvcc")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

var (
	entryRe = regexp.MustCompile(`Compiling entry function '(\w+)'`)
	regsRe  = regexp.MustCompile(`Used (\d+) registers`)
	spillRe = regexp.MustCompile(`(\d+) bytes spill stores`)
	// ptxEntryRe matches a kernel's entry in PTX: ".entry name(".
	ptxEntryRe = regexp.MustCompile(`\.entry\s+(\w+)\(`)
)

// summarize turns ptxas -v output into "kernel regs[/spill bytes], ...".
func summarize(out string) string {
	var parts []string
	kernel, spill := "", ""
	for _, line := range strings.Split(out, "\n") {
		if m := entryRe.FindStringSubmatch(line); m != nil {
			kernel, spill = m[1], ""
		}
		if m := spillRe.FindStringSubmatch(line); m != nil && m[1] != "0" {
			spill = "/spills " + m[1] + "B"
		}
		if m := regsRe.FindStringSubmatch(line); m != nil && kernel != "" {
			parts = append(parts, kernel+" "+m[1]+spill)
			kernel = ""
		}
	}
	return fmt.Sprintf("%d kernels: %s", len(parts), strings.Join(parts, ", "))
}
