package weights

import (
	"os"
	"path/filepath"
	"syscall"
)

// fileKey stats name (following symlinks) for FingerprintCached's cache.
func fileKey(name string) (statKey, bool) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return statKey{}, false
	}
	info, err := os.Stat(abs)
	if err != nil {
		return statKey{}, false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return statKey{}, false
	}
	return statKey{path: abs, dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}
