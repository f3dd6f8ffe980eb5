// Package nvml reads the few NVIDIA Management Library figures that package
// monitor reports (device count, utilization samples and rates, memory in
// use) through libnvidia-ml.so.1, opened with dlopen at run time: nothing is
// linked at build time and no NVIDIA header is needed, so esm2go builds, and
// Init fails cleanly, on a machine without the NVIDIA driver. A build without
// cgo has no dlopen: Init returns ErrNoCgo there.
package nvml
