// Package tarball reads the regular files of a gzipped tar archive (a chart, a release
// archive) for tests.
package tarball

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"testing"
)

// File is one regular file of an archive, in the archive's order.
type File struct {
	Name string
	Mode int64
	Data []byte
}

// Read returns the regular files of the .tar.gz at path, failing t if it cannot.
func Read(t testing.TB, path string) []File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var files []File
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, h.Name, err)
		}
		files = append(files, File{Name: h.Name, Mode: h.Mode, Data: data})
	}
}
