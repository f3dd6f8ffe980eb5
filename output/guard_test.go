package output

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshot maps every path under dir (relative) to its contents ("<dir>" for
// directories), to prove a refused overwrite changed nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			m[rel] = "<dir>"
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			m[rel] = "-> " + l
		case d.Type().IsRegular():
			b, _ := os.ReadFile(p)
			m[rel] = string(b)
		default:
			m[rel] = d.Type().String()
		}
		return nil
	})
	return m
}

// TestOverwriteRefusesWhatEsm2goDidNotWrite: Overwrite may replace a regular
// file or an esm2go npy output, nothing else, and a refusal leaves
// everything as it was.
func TestOverwriteRefusesWhatEsm2goDidNotWrite(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string // in the error
	}{
		{"user directory", func(t *testing.T, path string) {
			os.MkdirAll(filepath.Join(path, "thesis"), 0o755)
			os.WriteFile(filepath.Join(path, "thesis", "chapter1.tex"), []byte("years of work"), 0o644)
		}, "did not write"},
		{"empty directory", func(t *testing.T, path string) { os.Mkdir(path, 0o755) }, "no esm2go metadata.json"},
		{"npy output with a foreign file", func(t *testing.T, path string) {
			writeAll(t, path, NPY, testSchema, testRows(testSchema)[:2])
			os.WriteFile(filepath.Join(path, "notes.txt"), []byte("mine"), 0o644)
		}, `"notes.txt"`},
		{"npy output with a subdirectory", func(t *testing.T, path string) {
			writeAll(t, path, NPY, testSchema, testRows(testSchema)[:2])
			os.Mkdir(filepath.Join(path, "sub"), 0o755)
		}, `"sub"`},
		{"directory with a fake metadata.json", func(t *testing.T, path string) {
			os.Mkdir(path, 0o755)
			os.WriteFile(filepath.Join(path, "metadata.json"), []byte(`{"format":"parquet"}`), 0o644)
		}, "not esm2go's"},
		{"symbolic link", func(t *testing.T, path string) {
			os.WriteFile(path+".target", []byte("target"), 0o644)
			os.Symlink(filepath.Base(path)+".target", path)
		}, "symbolic link"},
		{"named pipe", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Skip("mkfifo:", err)
			}
		}, "named pipe"},
	}
	for _, f := range formats {
		for _, c := range cases {
			t.Run(string(f)+"/"+c.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "out")
				c.setup(t, path)
				before := snapshot(t, dir)
				for _, call := range []string{"Check", "Create"} {
					var err error
					if call == "Check" {
						err = Check(path, Options{Overwrite: true})
					} else {
						_, err = CreateWithOptions(path, f, testSchema, Options{Overwrite: true})
					}
					if !errors.Is(err, ErrNotReplaceable) || !strings.Contains(err.Error(), c.want) {
						t.Fatalf("%s: error %v, want ErrNotReplaceable mentioning %q", call, err, c.want)
					}
				}
				if after := snapshot(t, dir); !reflect.DeepEqual(before, after) {
					t.Errorf("refused overwrite changed the directory:\nbefore %v\nafter  %v", before, after)
				}
			})
		}
	}
}

func TestOverwriteRefusesDotAndInputs(t *testing.T) {
	t.Parallel()
	for _, p := range []string{".", "..", "/", "a/.."} {
		if _, err := CreateWithOptions(p, NPY, testSchema, Options{Overwrite: true}); err == nil || !strings.Contains(err.Error(), "names a directory itself") {
			t.Errorf("%q: error %v", p, err)
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.fasta")
	os.WriteFile(in, []byte(">a\nMK\n"), 0o644)
	_, err := CreateWithOptions(in, Parquet, testSchema, Options{Overwrite: true, Keep: []string{in}})
	if !errors.Is(err, ErrNotReplaceable) || !strings.Contains(err.Error(), "an input of this run") {
		t.Fatalf("output = input: %v", err)
	}
	// Through another name for the same file, too.
	link := filepath.Join(dir, "same.parquet")
	if err := os.Link(in, link); err == nil {
		if _, err := CreateWithOptions(link, Parquet, testSchema, Options{Overwrite: true, Keep: []string{in}}); !errors.Is(err, ErrNotReplaceable) {
			t.Fatalf("hard link to an input: %v", err)
		}
	}
	if b, _ := os.ReadFile(in); string(b) != ">a\nMK\n" {
		t.Fatal("input changed")
	}
}

// TestOverwriteSwapsDirectories: an esm2go npy output is replaced whole (by
// the other format too), leaving nothing else behind.
func TestOverwriteSwapsDirectories(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			writeAll(t, path, NPY, testSchema, testRows(testSchema))
			w, err := CreateWithOptions(path, f, testSchema, Options{Overwrite: true})
			if err != nil {
				t.Fatal(err)
			}
			rows := testRows(testSchema)
			if err := w.Write(&rows[0]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
				t.Errorf("after overwrite: %v", names)
			}
			if st, err := os.Stat(path); err != nil || st.IsDir() != (f == NPY) {
				t.Fatalf("not a %s output: %v", f, err)
			}
		})
	}
}

// TestSecondWriterIsRefused: two runs on one output cannot both succeed.
func TestSecondWriterIsRefused(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			w1, err := CreateWithOptions(path, f, testSchema, Options{Overwrite: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, ow := range []bool{false, true} {
				if _, err := CreateWithOptions(path, f, testSchema, Options{Overwrite: ow}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid ") {
					t.Fatalf("second writer (overwrite %v): %v, want ErrLocked naming the holder", ow, err)
				}
				if err := Check(path, Options{Overwrite: ow}); !errors.Is(err, ErrLocked) {
					t.Fatalf("Check while locked: %v", err)
				}
			}
			rows := testRows(testSchema)
			w1.Write(&rows[0])
			if err := w1.Close(); err != nil {
				t.Fatal(err)
			}
			// Released: a later run may overwrite.
			w2, err := CreateWithOptions(path, f, testSchema, Options{Overwrite: true})
			if err != nil {
				t.Fatalf("after the first closed: %v", err)
			}
			w2.Abort()
			if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
				t.Errorf("left %v", names)
			}
		})
	}
}

// TestKilledRunLeftovers: temporaries of a run killed with SIGKILL (a real
// child process) are found and removed by the next run on the output, and
// the dead run's lock does not block it.
func TestKilledRunLeftovers(t *testing.T) {
	t.Parallel()
	if p := os.Getenv("ESM2GO_OUTPUT_KILLME"); p != "" {
		f := Format(os.Getenv("ESM2GO_OUTPUT_FORMAT"))
		w, err := Create(p, f, testSchema)
		if err != nil {
			t.Fatal(err)
		}
		rows := testRows(testSchema)
		w.Write(&rows[0])
		os.WriteFile(p+".ready", nil, 0o644)
		time.Sleep(time.Minute) // killed here
		return
	}
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			cmd := exec.Command(os.Args[0], "-test.run=^TestKilledRunLeftovers$")
			cmd.Env = append(os.Environ(), "ESM2GO_OUTPUT_KILLME="+path, "ESM2GO_OUTPUT_FORMAT="+string(f))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				if _, err := os.Stat(path + ".ready"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatal("child never started writing")
				}
				time.Sleep(10 * time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			os.Remove(path + ".ready")
			names := dirEntries(t, dir)
			if len(names) != 2 || !strings.HasPrefix(names[1], ".out.tmp-") {
				t.Fatalf("after the kill: %v, want the lock file and a temporary", names)
			}
			var log strings.Builder
			w, err := CreateWithOptions(path, f, testSchema, Options{Log: testLogger(&log)})
			if err != nil {
				t.Fatalf("run after a killed one: %v", err)
			}
			if !strings.Contains(log.String(), "removed the unfinished output of an earlier run") {
				t.Errorf("cleanup not reported: %q", log.String())
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
				t.Errorf("after the next run: %v", names)
			}
		})
	}
}

// TestInterruptedReplaceIsRepaired: a run killed between moving the old
// output aside and renaming the new one in (file systems without an atomic
// exchange) must not lose the old output: the next run puts it back.
func TestInterruptedReplaceIsRepaired(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "out")
	writeAll(t, path, NPY, testSchema, testRows(testSchema))
	want := snapshot(t, path)
	aside := filepath.Join(dir, ".out.old-123")
	os.Mkdir(aside, 0o700)
	if err := os.Rename(path, filepath.Join(aside, "old")); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	if _, err := Create(path, NPY, testSchema); !errors.Is(err, ErrExists) {
		t.Fatalf("after repair the old output must exist again: %v", err)
	}
	if got := snapshot(t, path); !reflect.DeepEqual(got, want) {
		t.Fatal("restored output differs")
	}
	// Completed replace: the aside copy is superseded and removed.
	os.Mkdir(aside, 0o700)
	writeAll(t, filepath.Join(aside, "old"), NPY, testSchema, testRows(testSchema)[:1])
	w, err := CreateWithOptions(path, NPY, testSchema, Options{Overwrite: true, Log: testLogger(&log)})
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"out"}) {
		t.Errorf("left %v", names)
	}
	if got := snapshot(t, path); !reflect.DeepEqual(got, want) {
		t.Fatal("the current output changed")
	}
}

func testLogger(b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, nil))
}
