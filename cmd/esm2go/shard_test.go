package main

import (
	"strings"
	"testing"
)

func TestParseShard(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, c := range []struct {
		arg  string
		env  func(string) string
		want string // "i/N", or an error substring
	}{
		{"", env(), "0/0"},
		{"0/1", env(), "0/1"},
		{"3/4", env(), "3/4"},
		{"4/4", env(), "invalid --shard"},
		{"-1/4", env(), "invalid --shard"},
		{"1/0", env(), "invalid --shard"},
		{"x", env(), "invalid --shard"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "8"), "5/8"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "8"), "4/8"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "9", "SLURM_ARRAY_TASK_COUNT", "5"), "contiguous array"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "3"), "neither SLURM_ARRAY_TASK_COUNT"},
		{"auto", env("SLURM_ARRAY_TASK_ID", "x", "SLURM_ARRAY_TASK_COUNT", "8"), "not a number"},
		{"auto", env("JOB_COMPLETION_INDEX", "2", "JOB_COMPLETIONS", "3"), "2/3"},
		{"auto", env("JOB_COMPLETION_INDEX", "2"), "JOB_COMPLETIONS is not"},
		{"auto", env("JOB_COMPLETION_INDEX", "3", "JOB_COMPLETIONS", "3"), "outside"},
		{"auto", env(), "no job array found"},
	} {
		got, err := parseShard(c.arg, c.env)
		if err != nil {
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%q: error %v, want %q", c.arg, err, c.want)
			}
			continue
		}
		if got.String() != c.want {
			t.Errorf("%q: %v, want %s", c.arg, got, c.want)
		}
	}
}
