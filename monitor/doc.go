// Package monitor watches an embedding run and tells, window by window,
// whether the device is fed: throughput, loader and writer wait, queue
// depths, process and GPU memory, GPU utilization (NVML, when the NVIDIA
// driver library is present). Each window gives a human line, a JSON object
// per line and Prometheus gauges; a device idle for more than a tenth of a
// window gives a warning naming the likely cause, and steady RSS growth with
// bounded queues gives a leak warning.
//
// Cost on the pipeline: Observe is the embed.ProgressFunc and runs on the
// compute goroutine. Between windows it is one comparison; at a window it
// copies the Summary and makes a non-blocking send to the monitor goroutine
// (a window is skipped, not waited for, when that goroutine lags). Everything
// else (reading /proc, runtime/metrics, NVML, encoding, writing, HTTP) runs on
// the monitor's own goroutines, except ComputeStarted's one NVML reading of
// each device, on the caller's goroutine before the run's clock starts. A
// failing NVML or metrics file gives one warning and the run goes on.
//
// ComputeStarted (embed.Options.Started) marks the end of loading: GPU
// utilization counts from there, as the run's other figures do.
package monitor
