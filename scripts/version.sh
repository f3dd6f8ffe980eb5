#!/bin/sh
# Prints the version that builds stamp into esm2go (-ldflags "-X
# main.version=..."; the Makefile and scripts/demo.sh use it): git describe
# of the checkout (a tag, or the commit, "-dirty" with local changes) and
# the commit's date, e.g. v0.4.0-3-g1a2b3c4d5e6f-dirty+2026-12-02. Prints
# nothing outside a git checkout: the binary then reports what Go's build
# information holds (see Version in cmd/esm2go/cli.go).
cd "$(dirname "$0")/.." || exit 0
v=$(git describe --tags --always --dirty --abbrev=12 2>/dev/null) || exit 0
d=$(git log -1 --format=%cs 2>/dev/null)
echo "$v${d:++$d}"
