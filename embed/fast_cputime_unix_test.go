//go:build unix

package embed

import "syscall"

// cpuSeconds is the CPU time (user + system) this process has used, all
// goroutines together: on a shared machine it says what a benchmark cost
// when its wall time says mostly how busy the machine was.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
