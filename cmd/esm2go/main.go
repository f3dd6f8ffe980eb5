// Command esm2go computes ESM2 protein embeddings from FASTA files.
//
//	esm2go embed --model facebook/esm2_t33_650M_UR50D --out emb.parquet proteins.fasta
//	esm2go info --model facebook/esm2_t33_650M_UR50D
//
// Run "esm2go help" for the commands and "esm2go embed --help" for the flags.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, stop := onSignals(context.Background(), sigs, os.Stderr, os.Exit)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	stop()
	os.Exit(code)
}

// onSignals cancels the returned context at the first signal, so the run
// stops reading, keeps what it wrote and exits; a second signal exits at
// once with 128+2 (what a shell reports for an interrupt). stop ends the
// watcher goroutine.
func onSignals(parent context.Context, sigs <-chan os.Signal, stderr io.Writer, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "\nesm2go: %v: stopping; rows already written are kept (signal again to exit at once)\n", s)
			cancel(fmt.Errorf("stopped by %v", s))
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "\nesm2go: %v again: exiting now\n", s)
			exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		<-finished
		cancel(nil)
	}
}
