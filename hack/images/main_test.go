package main

import (
	"archive/tar"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func newOptions(t *testing.T, platforms string) options {
	t.Helper()
	o := options{version: "v9.9.9-test", out: t.TempDir(), source: "https://example.com/hive-operator"}
	if err := o.parse(platforms); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestParse(t *testing.T) {
	for _, tc := range []struct{ version, platforms string }{{"", "linux/amd64"}, {"v1", "linux"}, {"v1", "linux/amd64,"}} {
		o := options{version: tc.version}
		if err := o.parse(tc.platforms); err == nil {
			t.Errorf("version %q, platforms %q: no error", tc.version, tc.platforms)
		}
	}
}

// TestIndexHasEveryPlatform builds a small binary for two platforms: one index, one image
// each, with the platform in the index and in the image's config.
func TestIndexHasEveryPlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	o := newOptions(t, "linux/amd64,linux/arm64")
	idx, err := imageIndex(t.Context(), o, image{name: "hello", pkg: module + "/hack/images/testdata/hello", entrypoint: "/hello"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture {
			t.Errorf("the index says %s, the image's config %s/%s", d.Platform, cf.OS, cf.Architecture)
		}
		got = append(got, d.Platform.String())
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
		t.Errorf("platforms %v, want %v", got, want)
	}
}

// TestImages builds the project's images as make images does and pushes them to a
// registry, reads them back from their OCI layouts, checks that the registry holds the same,
// and runs the binary each holds.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	o := newOptions(t, "linux/amd64")
	o.push = strings.TrimPrefix(reg.URL, "http://") + "/aihub"
	if err := build(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ image, entrypoint, prints string }{
		{"hive-operator", "/manager", "manager v9.9.9-test ("},
		{"hive-agent", "/hive-agent", "hive-agent v9.9.9-test ("},
		{"hive-gateway", "/hive-gateway", "hive-gateway v9.9.9-test ("},
	} {
		t.Run(want.image, func(t *testing.T) {
			p, err := layout.FromPath(filepath.Join(o.out, want.image))
			if err != nil {
				t.Fatal(err)
			}
			outer, err := p.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			om, err := outer.IndexManifest()
			if err != nil || len(om.Manifests) != 1 || om.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != o.version {
				t.Fatalf("the layout holds %+v (%v), want one index named %s", om, err, o.version)
			}
			idx, err := outer.ImageIndex(om.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := name.ParseReference(o.push + "/" + want.image + ":" + o.version)
			if err != nil {
				t.Fatal(err)
			}
			pushed, err := remote.Index(ref)
			if err != nil {
				t.Fatalf("reading the pushed image: %v", err)
			}
			if got, _ := pushed.Digest(); got != om.Manifests[0].Digest {
				t.Errorf("the registry holds %s, the layout %s", got, om.Manifests[0].Digest)
			}
			img, err := idx.Image(mustManifest(t, idx).Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if c.User != User || !slices.Equal(c.Entrypoint, []string{want.entrypoint}) || len(c.Cmd) > 0 {
				t.Errorf("user %q, entrypoint %q, cmd %q; want %s and [%s]", c.User, c.Entrypoint, c.Cmd, User, want.entrypoint)
			}
			for _, l := range []string{"title", "description", "version", "source", "created", "revision"} {
				if c.Labels["org.opencontainers.image."+l] == "" {
					t.Errorf("no label org.opencontainers.image.%s in %v", l, c.Labels)
				}
			}
			if c.Labels["org.opencontainers.image.version"] != o.version || c.Labels["org.opencontainers.image.title"] != want.image {
				t.Errorf("labels %v", c.Labels)
			}
			files := contents(t, img)
			if names := slices.Sorted(func(yield func(string) bool) {
				for n := range files {
					if !yield(n) {
						return
					}
				}
			}); !slices.Equal(names, []string{strings.TrimPrefix(want.entrypoint, "/"), "tmp/"}) {
				t.Errorf("the image holds %v: want the binary and /tmp alone (no shell)", names)
			}
			bin := filepath.Join(t.TempDir(), "bin")
			if err := os.WriteFile(bin, files[strings.TrimPrefix(want.entrypoint, "/")], 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--version").Output()
			if err != nil || !strings.HasPrefix(string(out), want.prints) {
				t.Errorf("%s --version printed %q (%v), want %q…", want.entrypoint, out, err, want.prints)
			}
		})
	}
}

func mustManifest(t *testing.T, idx v1.ImageIndex) *v1.IndexManifest {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index manifest %+v (%v), want one image", m, err)
	}
	return m
}

// contents returns every entry of an image's layers, by name, with its bytes.
func contents(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
		_ = rc.Close()
	}
	return files
}
