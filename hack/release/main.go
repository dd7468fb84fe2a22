// Command release builds the kubectl plugin's release archives as .goreleaser.yaml describes
// them, writes their checksums, and renders the krew manifest from .krew.yaml with each
// archive's sha256, as krew-release-bot would:
//
//	go run ./hack/release -version v0.1.0 -out dist/plugin [-platforms linux/amd64]
//
// It implements the part of goreleaser's configuration the project uses and refuses any
// other key, so a change to .goreleaser.yaml that this command would not carry out fails
// here instead of producing different archives than a goreleaser release would.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	var o options
	flag.StringVar(&o.config, "config", ".goreleaser.yaml", "the goreleaser configuration")
	flag.StringVar(&o.krewTemplate, "krew-template", ".krew.yaml", "the krew manifest template (krew-release-bot format)")
	flag.StringVar(&o.version, "version", "", "the release tag, e.g. v0.1.0")
	flag.StringVar(&o.out, "out", "dist/plugin", "where the archives, checksums.txt and the krew manifest go")
	platforms := flag.String("platforms", "", "build only these os/arch pairs (comma-separated); the krew manifest then lists only them")
	flag.Parse()
	if *platforms != "" {
		o.platforms = strings.Split(*platforms, ",")
	}
	r, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
	for _, a := range r.archives {
		fmt.Println(a.path)
	}
	fmt.Println(r.checksums)
	fmt.Println(r.manifest)
}
