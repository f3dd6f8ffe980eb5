#!/usr/bin/env bash
# Best effort: install OpenBLAS (esm2go's CPU backend dlopens it when present,
# about 9x faster matrix products than the pure-Go fallback). Never fails.
if ldconfig -p 2>/dev/null | grep -q libopenblas; then
	exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "installing libopenblas0-pthread (optional, speeds up the CPU backend)" >&2
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread; } >&2 ||
		echo "OpenBLAS install failed; the CPU backend uses pure Go" >&2
else
	echo "OpenBLAS not found and apt-get unavailable (or not root); the CPU backend uses pure Go" >&2
fi
exit 0
