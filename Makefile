# Convenience targets; each is one command you can also run by hand.
.PHONY: build demo test clean

build:
	go build -o bin/esm2go ./cmd/esm2go

demo:
	scripts/demo.sh

test:
	go test ./...

clean:
	rm -rf bin out
