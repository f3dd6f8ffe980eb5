# Convenience targets; each is one command you can also run by hand.
.PHONY: build install demo test clean

# The version stamped into the binary (esm2go version, and every output's
# esm2go_version metadata): git describe plus the commit date
# (scripts/version.sh). Empty outside a checkout; the binary then reports
# Go's build information.
VERSION ?= $(shell scripts/version.sh)
LDFLAGS := -X 'main.version=$(VERSION)'
BIN ?= bin/esm2go

build:
	go build -ldflags="$(LDFLAGS)" -o $(BIN) ./cmd/esm2go

install:
	go install -ldflags="$(LDFLAGS)" ./cmd/esm2go

demo:
	scripts/demo.sh

test:
	scripts/test.sh

clean:
	rm -rf bin out

# The GPU suite's binaries (run scripts/gpu-suite.sh OUTDIR on the GPU host).
.PHONY: gpu-build
# Stripped (-s -w) so the binaries and the repo fit what travels to the host.
gpu-build:
	go build -ldflags="-s -w $(LDFLAGS)" -o bin/esm2go ./cmd/esm2go
	go test -c -ldflags='-s -w' -o bin/cudadrv.test ./internal/cudadrv
	go test -c -ldflags='-s -w' -o bin/nvml.test ./internal/nvml
	go test -c -ldflags='-s -w' -o bin/esmcuda.test ./esm/cuda
	go test -c -ldflags='-s -w' -o bin/tests.test ./tests
	go test -c -ldflags='-s -w' -o bin/embed.test ./embed
