package tests

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/esm2go/esm2go"

// cudaDepRules says which packages may not link CUDA. Every package listed
// must not depend on the CUDA binding (internal/cudadrv), the CUDA backend
// (esm/cuda), any other cgo package of this module, or a third-party GPU
// library (an import path naming cuda, nvml, nvrtc or cublas); also lists
// further packages it must not depend on. Only cmd/esm2go (which chooses the
// device), esm/cuda and monitor (NVML) link GPU code.
var cudaDepRules = []struct {
	pkg  string
	also []string
}{
	// The reader workers are pure I/O: no tokenizer, model or GPU handle.
	{"data", []string{module + "/esm"}},
	{"attention", nil},
	{"esm", nil},
	{"esm/cpu", nil}, // itself cgo (OpenBLAS through dlopen), nothing else of ours
	{"embed", nil},
	{"output", nil},
	{"weights", nil},
}

// under reports whether path is pkg or a package below it.
func under(path, pkg string) bool { return path == pkg || strings.HasPrefix(path, pkg+"/") }

// TestNoCUDADependency checks cudaDepRules on the package graph of `go list`
// (with CGO_ENABLED=1, so that cgo files count). It skips only where no Go
// toolchain is on PATH (a test binary run on the GPU host).
func TestNoCUDADependency(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("package graph not checked: no go command on PATH (%v)", err)
	}
	list := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), goBin, append([]string{"list"}, args...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		out, err := cmd.Output()
		if err != nil {
			msg := err.Error()
			if ee, ok := err.(*exec.ExitError); ok {
				msg += ": " + string(ee.Stderr[:min(len(ee.Stderr), 2000)])
			}
			t.Fatalf("go list %s: %s", strings.Join(args, " "), msg)
		}
		return string(out)
	}

	// Which packages of the module have cgo files (-e: a package mid-edit
	// elsewhere in the tree does not stop the listing).
	cgo := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(list("-e", "-f", "{{.ImportPath}} {{len .CgoFiles}}", module+"/...")), "\n") {
		path, n, _ := strings.Cut(line, " ")
		if k, err := strconv.Atoi(n); err != nil {
			t.Fatalf("go list: unexpected line %q", line)
		} else if k > 0 {
			cgo[path] = true
		}
	}
	if !cgo[module+"/internal/cudadrv"] {
		t.Fatalf("go list finds no cgo files in internal/cudadrv (cgo packages: %v): the check below would be blind", cgo)
	}

	args := []string{"-f", "{{.ImportPath}}:{{range .Deps}} {{.}}{{end}}"}
	for _, r := range cudaDepRules {
		args = append(args, module+"/"+r.pkg)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(list(args...)), "\n") {
		path, ds, _ := strings.Cut(line, ":")
		deps[path] = strings.Fields(ds)
	}
	for _, r := range cudaDepRules {
		pkg := module + "/" + r.pkg
		ds, ok := deps[pkg]
		if !ok {
			t.Errorf("%s: not in go list's output", r.pkg)
			continue
		}
		for _, dep := range ds {
			var why string
			switch {
			case under(dep, module+"/internal/cudadrv"):
				why = "the CUDA binding"
			case under(dep, module+"/esm/cuda"):
				why = "the CUDA backend"
			case cgo[dep]:
				why = "a cgo package of this module"
			case strings.Contains(dep, "cuda") || strings.Contains(dep, "nvml") || strings.Contains(dep, "nvrtc") || strings.Contains(dep, "cublas"):
				why = "a GPU library"
			}
			for _, bad := range r.also {
				if why == "" && under(dep, bad) {
					why = "a package it must not see"
				}
			}
			if why != "" {
				t.Errorf("%s depends on %s (%s)", r.pkg, dep, why)
			}
		}
	}
}
