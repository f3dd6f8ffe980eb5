package data

import (
	"errors"
	"fmt"
	"os"
)

// shardPlan is what one shard reads of each input.
type shardPlan struct {
	on     bool
	ranges []byteRange // per input
}

// byteRange is the part [a, b) of a plain file this shard reads; whole
// marks a compressed input (never split) that belongs to this shard.
type byteRange struct {
	a, b  int64
	whole bool
}

func (r byteRange) empty() bool { return !r.whole && r.a >= r.b }

// planShard cuts the inputs' concatenated bytes into opts.Shard.Count equal
// ranges and keeps this shard's part of every input (see Options.Shard).
func planShard(inputs []string, opts Options) (shardPlan, error) {
	sh := opts.Shard
	if sh.Index < 0 || sh.Index >= sh.Count {
		return shardPlan{}, fmt.Errorf("data: shard %d of %d does not exist", sh.Index, sh.Count)
	}
	sizes := make([]int64, len(inputs))
	gz := make([]bool, len(inputs))
	var total int64
	for i, name := range inputs {
		if name == "-" {
			return shardPlan{}, errors.New("data: standard input cannot be sharded (every shard would need all of it)")
		}
		fi, err := os.Stat(name)
		if err != nil {
			return shardPlan{}, fmt.Errorf("data: input %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			return shardPlan{}, fmt.Errorf("data: input %s is not a regular file: it cannot be sharded", name)
		}
		sizes[i] = fi.Size()
		if gz[i], err = isGzip(name); err != nil {
			return shardPlan{}, err
		}
		total += sizes[i]
	}
	// Shard k covers global bytes [total*k/N, total*(k+1)/N).
	cut := func(k int) int64 { return int64(float64(total) * float64(k) / float64(sh.Count)) }
	if total < 1<<40 { // exact integer arithmetic where it cannot overflow
		cut = func(k int) int64 { return total * int64(k) / int64(sh.Count) }
	}
	lo, hi := cut(sh.Index), cut(sh.Index+1)
	plan := shardPlan{on: true, ranges: make([]byteRange, len(inputs))}
	var off int64
	for i := range inputs {
		start, end := off, off+sizes[i]
		off = end
		if gz[i] {
			plan.ranges[i].whole = start >= lo && start < hi || (sizes[i] == 0 && start == lo && lo < hi)
			continue
		}
		a, b := max(start, lo)-start, min(end, hi)-start
		if a < b {
			plan.ranges[i] = byteRange{a: a, b: b}
		}
	}
	return plan, nil
}

// isGzip reports whether the file starts with the gzip magic bytes.
func isGzip(name string) (bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, fmt.Errorf("data: input %s: %w", name, err)
	}
	defer f.Close()
	var m [2]byte
	n, _ := f.ReadAt(m[:], 0)
	return n == 2 && m[0] == 0x1f && m[1] == 0x8b, nil
}
