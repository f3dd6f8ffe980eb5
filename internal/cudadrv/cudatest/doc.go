// Package cudatest holds what the CUDA tests share:
//   - the GPU policy of every GPU test (gpu.go): skip, saying why, only where
//     the machine has no NVIDIA GPU; where it has one, a backend or context
//     that fails to start fails the test with its error;
//   - nvcc compile checks of CUDA sources without a GPU (nvcc.go): tests of
//     the packages that embed .cu files compile them with nvcc when a CUDA
//     toolkit is installed on the machine running the tests, so a syntax or
//     type error in a kernel shows up before any GPU time is spent; where nvcc
//     is missing (CI) they skip.
package cudatest
