//go:build !unix

package main

import "os"

// lockTemp is a no-op where flock is not available.
func lockTemp(*os.File) error { return nil }

// removeStaleTemps removes nothing where a live writer's temporary cannot
// be told from a stale one.
func removeStaleTemps(string) []string { return nil }

// removeStalePartials removes nothing where a live writer's temporary
// cannot be told from a stale one.
func removeStalePartials(string) []string { return nil }
