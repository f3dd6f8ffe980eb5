// Command esm2go computes ESM2 protein embeddings from FASTA files.
//
//	esm2go embed --model facebook/esm2_t33_650M_UR50D --out emb.parquet proteins.fasta
//	esm2go info --model facebook/esm2_t33_650M_UR50D
//
// Run "esm2go help" for the commands and "esm2go embed --help" for the flags.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, stop := onSignals(context.Background(), sigs, os.Stderr, os.Exit, jsonLogRequested(os.Args[1:]))
	stopProfiles, err := startProfiles(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "esm2go:", err)
		os.Exit(2)
	}
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err := stopProfiles(); err != nil {
		fmt.Fprintln(os.Stderr, "esm2go:", err)
	}
	signal.Stop(sigs)
	stop()
	os.Exit(code)
}

// onSignals cancels the returned context at the first signal, so the run
// stops reading, keeps what it wrote and exits; a second signal exits at
// once with 128+2 (what a shell reports for an interrupt). Its messages are
// JSON records when jsonLog (--log-format json), else text. stop ends the
// watcher goroutine.
func onSignals(parent context.Context, sigs <-chan os.Signal, stderr io.Writer, exit func(int), jsonLog bool) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	done := make(chan struct{})
	finished := make(chan struct{})
	say := func(s os.Signal, msg string) {
		if !jsonLog {
			fmt.Fprintf(stderr, "\nesm2go: %v: %s\n", s, msg)
			return
		}
		b, _ := json.Marshal(struct {
			Time   string `json:"time"`
			Level  string `json:"level"`
			Msg    string `json:"msg"`
			Signal string `json:"signal"`
		}{time.Now().Format(time.RFC3339Nano), "WARN", msg, s.String()}) // strings: cannot fail
		stderr.Write(append(b, '\n'))
	}
	go func() {
		defer close(finished)
		select {
		case s := <-sigs:
			say(s, "stopping after the rows in flight; the final message says what is kept (signal again to exit at once)")
			cancel(fmt.Errorf("stopped by %v", s))
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			say(s, "signal again: exiting now")
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

// jsonLogRequested reports whether args ask for --log-format json (also
// --log_format, and the =json forms), read before the flags are parsed so
// that a signal's message can follow the log format from the start.
func jsonLogRequested(args []string) bool {
	for i, a := range args {
		for _, name := range []string{"--log-format", "--log_format"} {
			if a == name+"=json" || (a == name && i+1 < len(args) && args[i+1] == "json") {
				return true
			}
		}
		if a == "--" {
			break
		}
	}
	return false
}
