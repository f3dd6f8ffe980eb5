// Command esm2go computes ESM2 protein embeddings from FASTA files.
//
//	esm2go embed --model facebook/esm2_t33_650M_UR50D --out emb.parquet proteins.fasta
//	esm2go info --model facebook/esm2_t33_650M_UR50D
//
// Run "esm2go help" for the commands and "esm2go embed --help" for the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
