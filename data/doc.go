// Package data is the reader stage of esm2go: it reads FASTA files (plain or
// gzip, stdin and named pipes included) with a few reader goroutines and
// yields raw records in input order through a bounded queue. It is pure I/O:
// it never sees a tokenizer, model weights or a GPU (a test checks its
// dependencies).
//
// # FASTA rules (Policy "esm2go-fasta/4")
//
//   - Line endings are LF, CRLF or a lone CR (mixed freely). Line numbers
//     count these line breaks, so CRLF is one break.
//   - A UTF-8 byte order mark (EF BB BF) at the start of a file (of a gzip
//     file's decompressed bytes) is skipped; anywhere else it is text.
//   - A header is a line whose first non-blank character is '>' (" >x" is a
//     header). Blanks are space, tab, vertical tab and form feed.
//   - Header is the text after '>', trimmed of blanks, as valid UTF-8 (each
//     run of invalid bytes becomes U+FFFD; other bytes, NUL included, are
//     kept). ID is its first word: words are separated by blanks and by
//     Unicode white space (U+00A0 no-break space, U+2000-U+200A, U+3000,
//     ...: unicode.IsSpace), which is also skipped before the first word.
//     An empty header ('>' or '> ') gives ID "" (the record is kept; its
//     index tells it apart). Duplicate IDs are kept as they are.
//   - Header keeps at most MaxHeaderBytes (64 KiB) of the line, counted from
//     the first non-blank byte after '>'; HeaderCut counts the bytes left
//     out, which are read and dropped. A cut inside a multi-byte character
//     leaves U+FFFD.
//   - Seq is every byte of the lines after the header up to the next header,
//     with all ASCII whitespace (blanks, CR, LF) removed and lines joined. It
//     is not upper-cased or validated: junk bytes (NUL, '*', digits) stay for
//     the tokenizer to judge. Blank lines anywhere are ignored. There is no
//     line length limit.
//   - With Options.MaxResidues > 0, Seq keeps the first MaxResidues residue
//     bytes of a record and Total counts all of them; the rest is counted
//     while it streams past and never stored, so a record of any length
//     (a gzip bomb, /dev/zero, a 200 MB line) costs MaxResidues bytes.
//     Those discarded bytes are not checked by anyone: a record whose junk
//     lies only beyond MaxResidues is not rejected for it. The consumer
//     decides per record, from Record.Truncated and Total, whether a cut
//     record is truncated (fair-esm keeps the first 1022 residues) or
//     rejected (too long to embed whole). With MaxResidues 0 everything is
//     kept, and memory grows with the longest record.
//   - A record with no residues is yielded with an empty Seq.
//   - Non-blank text before the first header of a file becomes one Record with
//     Problem set (ProblemBeforeHeader), Line at its first non-blank line, so
//     it is reported and counted, never silently dropped. Its Seq keeps the
//     first MaxPreambleBytes (1 KiB) of that text, whitespace removed; Total
//     counts it all.
//   - gzip is detected by its magic bytes (1f 8b), not by the file name;
//     concatenated gzip members are read as one stream; a truncated or corrupt
//     gzip stream is an error naming the file.
//
// esm2go-fasta/1 had no caps: it kept every header, residue and preamble
// byte. /2 adds MaxHeaderBytes and MaxPreambleBytes (always on) and
// Options.MaxResidues (off at 0), with Record.Total and Record.HeaderCut to
// say what was left out. Records that fit the caps are the same as under /1.
// /3 breaks the ID at Unicode white space too (under /2, ">P1\u00a0desc"
// gave ID "P1\u00a0desc"); headers without such characters give the same
// records as under /2. /4 skips a UTF-8 byte order mark (EF BB BF) at the
// start of a file, as editors on Windows write it (under /3 it made the first
// line text before the first header, so the first record was reported as a
// problem and not embedded); files without one give the same records as
// under /3.
//
// Errors and logs that quote user data (ids, headers, sequence text) should
// quote it with Quote, which keeps the first QuoteBytes (200) bytes.
//
// # Memory
//
// What the reader holds does not grow with the input, a record, a line or a
// header: each worker has a read buffer of about Options.BlockBytes; a block
// holds the records of about BlockBytes of input, and at most
// blockRecords (BlockBytes/64) of them, since a Record costs ~120 bytes
// whatever its size (a file of ">\n" records would otherwise cost 60 times
// its size); a record being read adds a small multiple of MaxResidues +
// MaxHeaderBytes (slices grow by doubling; 4 KiB of scratch); at most
// Workers*Prefetch blocks wait for Next, plus one being built per worker.
//
// # Concurrency
//
// Regular plain files are cut into byte ranges of about Options.BlockBytes;
// a worker reads its range with ReadAt, starts at the first header line that
// starts at or after the range start and parses every record whose header line
// starts inside the range (reading past the end, in pieces, to finish the
// last one). gzip inputs, stdin, named pipes and readers without ReadAt are
// read sequentially by one worker and cut into blocks at header lines. A
// dispatcher hands out ranges in input order; Reader.Next puts blocks back in
// input order and assigns Record.Index and Record.Line there. A range with
// more than blockRecords records yields several blocks. The records are
// identical whatever Workers and BlockBytes are. In a sharded run, lines
// count from the start of the shard's part of each file (Record.LineFrom);
// Reader.Line turns them into lines of the file, reading the part before
// once, on first use.
//
// # Cancellation
//
// Cancelling Open's ctx, or Close, stops every goroutine, and no goroutine
// outlives Close. Inputs are closed to end reads blocked in them, which
// needs inputs whose Close ends a pending Read. On Linux the default Open and
// stdin provide that for named pipes and pipes:
//
//   - A named pipe is opened with O_NONBLOCK, so open(2) returns at once even
//     with no writer (a plain open would block in the kernel, where nothing
//     can end it); its first Read waits in Go's poller until a writer writes,
//     or comes and closes (end of file, as with a plain open). Then it is
//     read through the poller.
//   - Stdin (Options.Stdin, an *os.File) that is a pipe or a socket is read
//     through a non-blocking duplicate of its descriptor in Go's poller; the
//     shared non-blocking flag is put back when the reader is done, and the
//     caller's file is not closed. A terminal or a regular file on stdin is
//     read as it is: a terminal read ends at the next line typed.
//   - Regular files and /dev/zero-like devices never block for long.
//
// Elsewhere, and for Options.Open or Options.Stdin readers whose Close does
// not end a pending Read, a read that never returns delays Close until it
// does.
package data
