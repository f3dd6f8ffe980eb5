# Convenience targets; each is one command you can also run by hand.
.PHONY: build demo test clean

build:
	go build -o bin/esm2go ./cmd/esm2go

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
	go build -ldflags='-s -w' -o bin/esm2go ./cmd/esm2go
	go test -c -ldflags='-s -w' -o bin/cudadrv.test ./internal/cudadrv
	go test -c -ldflags='-s -w' -o bin/esmcuda.test ./esm/cuda
	go test -c -ldflags='-s -w' -o bin/tests.test ./tests
