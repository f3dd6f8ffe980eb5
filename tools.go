//go:build tools

// Package tools pins dependencies that the packages being written now will import.
package tools
import (
 _ "github.com/spf13/pflag"
 _ "github.com/parquet-go/parquet-go"
 _ "github.com/nlpodyssey/gopickle/pytorch"
 _ "github.com/schollz/progressbar/v3"
 _ "github.com/NVIDIA/go-nvml/pkg/nvml"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "golang.org/x/sync/errgroup"
 _ "gonum.org/v1/gonum/blas/gonum"
 _ "golang.org/x/term"
)

