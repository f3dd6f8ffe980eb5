//go:build !linux

package output

func renameNoReplace(from, to string) error { return errRenameUnsupported }

func exchange(from, to string) error { return errRenameUnsupported }
