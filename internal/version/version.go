// Package version is the release every binary of the project reports (--version), set at
// build time from the Makefile's VERSION:
//
//	go build -ldflags "-X github.com/aihub-dev/hive-operator/internal/version.Version=v0.1.0"
//
// The same value tags the images and is the chart's appVersion, so a running binary says
// which release it came from.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release; a build without the flag reports the module version Go recorded
// (a go install of a tag), or "devel".
var Version = ""

// Get returns the release: Version, else the main module's version from the build info.
func Get() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

// String is what --version prints for a binary: its name, release, Go release and platform.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Get(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
