package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })

	Version = ""
	// A test binary's main module has no version: a build without the flag says so.
	if got := Get(); got != "devel" {
		t.Errorf("Get() without a version = %q, want devel", got)
	}
	Version = "v1.2.3"
	if got := Get(); got != "v1.2.3" {
		t.Errorf("Get() = %q, want the version set at build time", got)
	}
	got := String("manager")
	if !strings.HasPrefix(got, "manager v1.2.3 (") || !strings.Contains(got, runtime.Version()) || !strings.Contains(got, runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("String() = %q, want the binary, its version, Go's and the platform", got)
	}
}
