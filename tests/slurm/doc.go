// Package slurm holds an end-to-end test that starts a real single-host Slurm
// cluster (munged, slurmctld, slurmd as child processes of the test) and runs
// esm2go through it: a sharded job array merged back into one output, and an
// array task stopped mid-run that resumes when resubmitted.
//
// It needs Debian's slurm-wlm and munge and root; without them it skips,
// unless ESM2GO_REQUIRE_SLURM=1 (set by .ci/run after installing them), when
// a cluster that cannot start fails the test. docs/SCALING.md says what the
// test proves.
package slurm
