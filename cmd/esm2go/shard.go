package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// shardSpec is a parsed --shard value: this process embeds part Index of
// Count of the input.
type shardSpec struct {
	Index, Count int
	From         string // where it came from, for the log ("--shard", "SLURM_ARRAY_TASK_ID" ...)
}

func (s shardSpec) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// parseShard accepts "i/N" (0 <= i < N) or "auto": Slurm job arrays
// (SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT, or MIN/MAX), or a
// Kubernetes Indexed Job (JOB_COMPLETION_INDEX with JOB_COMPLETIONS, which
// the Job's manifest sets to its completions). getenv is os.Getenv in the
// CLI.
func parseShard(s string, getenv func(string) string) (shardSpec, error) {
	if s == "" {
		return shardSpec{}, nil
	}
	if s != "auto" {
		i, n, ok := strings.Cut(s, "/")
		idx, err1 := strconv.Atoi(i)
		cnt, err2 := strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || cnt < 1 || idx < 0 || idx >= cnt {
			return shardSpec{}, fmt.Errorf("invalid --shard %q (want i/N with 0 <= i < N, or auto)", s)
		}
		return shardSpec{Index: idx, Count: cnt, From: "--shard"}, nil
	}
	num := func(name string) (int, bool, error) {
		v := getenv(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, true, fmt.Errorf("--shard auto: %s=%q is not a number", name, v)
		}
		return n, true, nil
	}
	if id, ok, err := num("SLURM_ARRAY_TASK_ID"); err != nil {
		return shardSpec{}, err
	} else if ok {
		lo, hasMin, err := num("SLURM_ARRAY_TASK_MIN")
		if err != nil {
			return shardSpec{}, err
		}
		cnt, hasCount, err := num("SLURM_ARRAY_TASK_COUNT")
		if err != nil {
			return shardSpec{}, err
		}
		hi, hasMax, err := num("SLURM_ARRAY_TASK_MAX")
		if err != nil {
			return shardSpec{}, err
		}
		if !hasMin {
			lo = 0
		}
		if !hasCount {
			if !hasMax {
				return shardSpec{}, errors.New("--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX")
			}
			cnt = hi - lo + 1
		}
		if hasMax && hasCount && hi-lo+1 != cnt {
			return shardSpec{}, fmt.Errorf("--shard auto: the array %d-%d has %d tasks but SLURM_ARRAY_TASK_COUNT=%d: use a contiguous array (--array=0-%d) or --shard i/N", lo, hi, hi-lo+1, cnt, cnt-1)
		}
		idx := id - lo
		if cnt < 1 || idx < 0 || idx >= cnt {
			return shardSpec{}, fmt.Errorf("--shard auto: task %d is outside the array %d..%d", id, lo, lo+cnt-1)
		}
		return shardSpec{Index: idx, Count: cnt, From: "SLURM_ARRAY_TASK_ID"}, nil
	}
	if id, ok, err := num("JOB_COMPLETION_INDEX"); err != nil {
		return shardSpec{}, err
	} else if ok {
		cnt, has, err := num("JOB_COMPLETIONS")
		if err != nil {
			return shardSpec{}, err
		}
		if !has {
			return shardSpec{}, errors.New("--shard auto: JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not (set it in the Job's env to .spec.completions, or pass --shard $(JOB_COMPLETION_INDEX)/N)")
		}
		if cnt < 1 || id < 0 || id >= cnt {
			return shardSpec{}, fmt.Errorf("--shard auto: JOB_COMPLETION_INDEX=%d is outside 0..%d", id, cnt-1)
		}
		return shardSpec{Index: id, Count: cnt, From: "JOB_COMPLETION_INDEX"}, nil
	}
	return shardSpec{}, errors.New("--shard auto: no job array found (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); give --shard i/N")
}
