package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// This file holds the checks made on a .pt file before archive/zip parses it:
// what a file that is not a zip archive is (legacy torch.save, an HTML error
// page, an empty download), and bounds on the zip directory, which
// archive/zip trusts: it preallocates the entry count that the end record
// claims, and reads directory records until a bad one, so a crafted file can
// make it allocate far more than the file holds.

// Limits of the zip directory. A torch.save archive has one entry per
// storage plus ~6 (data.pkl, version, byteorder, ...): ESM2 15B has about 800,
// and its directory about 800 × 70 bytes (the tiny test checkpoint's 65
// entries take 4.4 KB).
const (
	ptMaxZipEntries  = 1 << 14 // 16384
	ptMaxZipDirBytes = 2 << 20 // bytes archive/zip may read while parsing the directory
)

// ptLegacyMagic is torch.save's legacy-format magic number,
// 0x1950a86a20f9469cfc6c, as the 10 little-endian bytes of a pickled LONG1.
var ptLegacyMagic = []byte{0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}

// ptIsLegacy reports whether data starts like a legacy (torch < 1.6, or
// _use_new_zipfile_serialization=False) torch.save file: a pickle of the magic
// number, as protocol 0/1 text ("L119547037146038801333356L\n") or, from
// protocol 2 on, PROTO [FRAME] LONG1.
func ptIsLegacy(data []byte) bool {
	const text = "L119547037146038801333356"
	if bytes.HasPrefix(data, []byte(text+"L\n")) || bytes.HasPrefix(data, []byte(text+"\n")) {
		return true
	}
	if len(data) < 2 || data[0] != 0x80 {
		return false
	}
	d := data[2:]
	if len(d) >= 9 && d[0] == 0x95 { // FRAME
		d = d[9:]
	}
	return len(d) >= 12 && d[0] == 0x8a && d[1] == 10 && bytes.Equal(d[2:12], ptLegacyMagic)
}

// ptSniff describes what data looks like when it is not a zip archive, for
// the error message.
func ptSniff(data []byte) string {
	trim := bytes.TrimLeft(data, " \t\r\n\ufeff")
	switch {
	case len(data) == 0:
		return "the file is empty (an interrupted download?)"
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		return "it is a damaged or truncated zip archive (no end-of-directory record; an interrupted download?)"
	case ptIsLegacy(data):
		return "it is in the legacy torch.save format (torch < 1.6); load and re-save it with a current torch.save"
	case bytes.HasPrefix(trim, []byte("<")): // <!DOCTYPE html>, <html>, <?xml ...>
		return "it looks like an HTML or XML page (" + ptHead(trim) + "), probably an error page saved by a download"
	case bytes.HasPrefix(trim, []byte("version https://git-lfs")):
		return "it is a Git LFS pointer file, not the checkpoint it points to (run git lfs pull)"
	case bytes.HasPrefix(trim, []byte("{")) || bytes.HasPrefix(trim, []byte("[")):
		return "it looks like JSON or text (" + ptHead(trim) + ")"
	case len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b:
		return "it is gzip-compressed; decompress it first"
	case len(data) >= 2 && data[0] == 0x80 && data[1] <= 5:
		return "it is a bare pickle, not a torch.save zip archive"
	case len(data) >= 10 && bytes.Equal(data[8:10], []byte(`{"`)):
		return "it looks like a safetensors file; pass the directory that holds it and config.json"
	case utf8.Valid(data[:min(len(data), 64)]):
		return "it looks like text (" + ptHead(data) + ")"
	}
	return fmt.Sprintf("it starts with bytes % x", data[:min(len(data), 8)])
}

// ptHead quotes the first line of b, cut to 40 bytes.
func ptHead(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "..."
	}
	return strconv.Quote(string(b))
}

// ptCheckZipEnd bounds the entry count a zip's end-of-directory record
// claims, before archive/zip preallocates it. archive/zip picks one end record
// from the last 65 KiB of the file; every candidate is checked here, with its
// zip64 record when it has one, so whichever is used is within the limit.
// found is false when the file has no end record at all (not a zip).
func ptCheckZipEnd(data []byte) (found bool, err error) {
	const endLen = 22 // end-of-central-directory record without its comment
	start := max(0, len(data)-(65*1024+endLen))
	for i := len(data) - endLen; i >= start; i-- {
		if data[i] != 'P' || data[i+1] != 'K' || data[i+2] != 5 || data[i+3] != 6 {
			continue
		}
		found = true
		rec := data[i : i+endLen]
		records := uint64(binary.LittleEndian.Uint16(rec[10:]))
		size := binary.LittleEndian.Uint32(rec[12:])
		offset := binary.LittleEndian.Uint32(rec[16:])
		if records == 0xffff || size == 0xffffffff || offset == 0xffffffff {
			// zip64: a locator 20 bytes before points at the zip64 end record.
			if i >= 20 && binary.LittleEndian.Uint32(data[i-20:]) == 0x07064b50 {
				p := binary.LittleEndian.Uint64(data[i-20+8:])
				if p <= uint64(len(data)) && uint64(len(data))-p >= 56 && binary.LittleEndian.Uint32(data[p:]) == 0x06064b50 {
					records = max(records, binary.LittleEndian.Uint64(data[p+32:]))
				}
			}
		}
		if records > ptMaxZipEntries {
			return true, fmt.Errorf("the zip directory claims %d entries, more than the %d a torch.save checkpoint can have", records, ptMaxZipEntries)
		}
	}
	return found, nil
}

// errPtZipDirTooBig is returned by ptGuardedReaderAt once archive/zip has
// read more than ptMaxZipDirBytes while parsing the directory.
var errPtZipDirTooBig = errors.New("zip directory larger than a torch.save checkpoint's")

// ptGuardedReaderAt reads the mapped file for archive/zip, counting what is
// read while the directory is parsed (armed), so that a directory of millions
// of tiny records cannot make archive/zip build millions of entries.
type ptGuardedReaderAt struct {
	data  []byte
	armed bool
	read  int64
}

func (g *ptGuardedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if g.armed {
		g.read += int64(len(p))
		if g.read > ptMaxZipDirBytes+128<<10 { // the directory plus the end-record search
			return 0, errPtZipDirTooBig
		}
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(g.data)) {
		return 0, io.EOF
	}
	n := copy(p, g.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
