//go:build !linux

package weights

// fileKey: the fingerprint cache needs a file's change time, read here on
// Linux only; elsewhere every fingerprint reads the files.
func fileKey(string) (statKey, bool) { return statKey{}, false }
