// Package data is the reader stage of esm2go: it reads FASTA files (plain or
// gzip, stdin included) with a few reader goroutines and yields raw records in
// input order through a bounded queue. It is pure I/O: it never sees a
// tokenizer, model weights or a GPU (a test checks its dependencies).
//
// # FASTA rules (Policy "esm2go-fasta/1")
//
//   - Line endings are LF, CRLF or a lone CR (mixed freely). Line numbers
//     count these line breaks, so CRLF is one break.
//   - A header is a line whose first non-blank character is '>' (" >x" is a
//     header). Blanks are space, tab, vertical tab and form feed.
//   - Header is the text after '>', trimmed of blanks, as valid UTF-8 (each
//     run of invalid bytes becomes U+FFFD; other bytes, NUL included, are
//     kept). ID is its first blank-separated word; an empty header ('>' or
//     '> ') gives ID "". Duplicate IDs are kept as they are.
//   - Seq is every byte of the lines after the header up to the next header,
//     with all ASCII whitespace (blanks, CR, LF) removed and lines joined. It
//     is not upper-cased or validated: junk bytes (NUL, '*', digits) stay for
//     the tokenizer to judge. Blank lines anywhere are ignored. There is no
//     line length limit.
//   - A record with no residues is yielded with an empty Seq.
//   - Non-blank text before the first header of a file becomes one Record with
//     Problem set (ProblemBeforeHeader), Line at its first non-blank line, so
//     it is reported and counted, never silently dropped.
//   - gzip is detected by its magic bytes (1f 8b), not by the file name;
//     concatenated gzip members are read as one stream; a truncated or corrupt
//     gzip stream is an error naming the file.
//
// # Concurrency
//
// Regular plain files are cut into byte ranges of about Options.BlockBytes;
// a worker reads its range with ReadAt, starts at the first header line that
// starts at or after the range start and parses every record whose header line
// starts inside the range (reading past the end to finish the last one).
// gzip inputs, stdin and readers without ReadAt are read sequentially by one
// worker and cut into blocks at header lines. A dispatcher hands out ranges in
// input order; Reader.Next puts finished blocks back in input order and assigns
// Record.Index and Record.Line there. At most Workers*Prefetch blocks are in
// flight or waiting. The records are identical whatever Workers and BlockBytes
// are.
package data
