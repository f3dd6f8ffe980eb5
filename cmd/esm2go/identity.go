package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// The identity of a run is what a later run must match to resume its
// committed rows (output.PartsOptions.Identity): the model's weights, every
// option that changes values, and the input.

// fingerprintCacheDir is where the model fingerprints of local checkpoint
// files are remembered (weights.FingerprintCached): $ESM2GO_FINGERPRINT_CACHE
// ("off" for nowhere), else $XDG_CACHE_HOME/esm2go/fingerprints or
// ~/.cache/esm2go/fingerprints.
func fingerprintCacheDir() string {
	if v, ok := os.LookupEnv("ESM2GO_FINGERPRINT_CACHE"); ok {
		if v == "off" {
			return ""
		}
		return v
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "esm2go", "fingerprints")
	}
	return ""
}

// inputFingerprint names the inputs by absolute path, size and
// modification time: cheap for inputs of hundreds of GB, and any edit,
// replacement or reordering of the inputs changes it. Standard input has no
// identity: a run reading it cannot be resumed (an empty result says so).
func inputFingerprint(inputs []string) (string, bool) {
	h := xxhash.New()
	for _, in := range inputs {
		if in == "-" {
			return "", false
		}
		abs, err := filepath.Abs(in)
		if err != nil {
			abs = in
		}
		st, err := os.Stat(in)
		if err != nil {
			return "", false
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", abs, st.Size(), st.ModTime().UnixNano())
	}
	return "xxh64:" + strconv.FormatUint(h.Sum64(), 16), true
}
