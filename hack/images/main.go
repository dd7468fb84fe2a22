// Command images builds the project's container images without a container engine: each
// binary is built static for every platform, put alone in one layer on an empty base, and
// the per-platform images are joined in one index (a multi-arch image). The result is
// written as an OCI image layout per image and, when a registry is given, pushed there.
//
//	go run ./hack/images -version v0.1.0                       # OCI layouts under dist/images
//	go run ./hack/images -version v0.1.0 -push ghcr.io/aihub-dev # and push them
//
// `make images` runs it with the Makefile's VERSION. The images hold nothing but the binary
// and an empty /tmp: no shell, no package manager, no libc. They run as 65532:65532, the
// non-root user distroless images use, and carry the org.opencontainers.image labels.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the user and group the images run as.
const User = "65532:65532"

// image is one image the project ships: its name, the package of its binary and the path
// the binary has in the image.
type image struct {
	name, pkg, entrypoint, description string
}

const module = "github.com/aihub-dev/hive-operator"

var images = []image{
	{"hive-operator", module + "/cmd/manager", "/manager", "The Hive operator: warm pools of AI agents and their tasks on Kubernetes."},
	{"hive-agent", module + "/cmd/hive-agent", "/hive-agent", "The reference Hive agent: runs each task with a command, an HTTP endpoint or an echo."},
	{"hive-gateway", module + "/cmd/hive-gateway", "/hive-gateway", "The Hive gateway: answers requests to hives through their warm agents, with no API write per request."},
}

// options say what to build.
type options struct {
	version, out, push, source string
	revision                   string // the commit built, when known
	platforms                  []v1.Platform
	created                    time.Time
}

func main() {
	o := options{}
	var platforms string
	flag.StringVar(&o.version, "version", "", "The release the binaries report and the images are tagged with. Required.")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "Comma-separated os/arch pairs to build for.")
	flag.StringVar(&o.out, "out", filepath.Join("dist", "images"), "Folder the OCI layouts are written to, one per image.")
	flag.StringVar(&o.push, "push", "", "Registry and path to push to (e.g. ghcr.io/aihub-dev); empty pushes nothing.")
	flag.StringVar(&o.source, "source", "https://github.com/aihub-dev/hive-operator", "The org.opencontainers.image.source label.")
	flag.Parse()
	err := o.parse(platforms)
	if err == nil {
		err = build(context.Background(), o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func (o *options) parse(platforms string) error {
	if o.version == "" {
		return errors.New("-version is required")
	}
	for p := range strings.SplitSeq(platforms, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || pl.OS == "" || pl.Architecture == "" {
			return fmt.Errorf("-platforms: %q is not os/arch", p)
		}
		o.platforms = append(o.platforms, *pl)
	}
	// The commit and its time, so that the same sources give the same images.
	o.created = time.Unix(0, 0).UTC()
	if out, err := exec.Command("git", "log", "-1", "--format=%H %ct").Output(); err == nil {
		var sec int64
		if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &o.revision, &sec); err == nil {
			o.created = time.Unix(sec, 0).UTC()
		}
	}
	return nil
}

// build builds, writes and pushes every image.
func build(ctx context.Context, o options) error {
	work, err := os.MkdirTemp("", "hive-images-")
	if err != nil {
		return fmt.Errorf("creating a work folder: %w", err)
	}
	defer func() { _ = os.RemoveAll(work) }()
	for _, img := range images {
		idx, err := imageIndex(ctx, o, img, work)
		if err != nil {
			return fmt.Errorf("%s: %w", img.name, err)
		}
		dir := filepath.Join(o.out, img.name)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing the old layout: %w", err)
		}
		p, err := layout.Write(dir, empty.Index)
		if err == nil {
			err = p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": o.version}))
		}
		if err != nil {
			return fmt.Errorf("%s: writing the OCI layout: %w", img.name, err)
		}
		digest, _ := idx.Digest()
		fmt.Printf("%s:%s %s -> %s\n", img.name, o.version, digest, dir)
		if o.push != "" {
			ref, err := name.NewTag(strings.TrimSuffix(o.push, "/") + "/" + img.name + ":" + o.version)
			if err == nil {
				err = pushIndex(ctx, ref, idx)
			}
			if err != nil {
				return fmt.Errorf("%s: pushing: %w", img.name, err)
			}
			fmt.Printf("pushed %s\n", ref)
		}
	}
	return nil
}

// imageIndex builds the image of every platform and joins them in an index.
func imageIndex(ctx context.Context, o options, img image, work string) (v1.ImageIndex, error) {
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, pl := range o.platforms {
		bin := filepath.Join(work, img.name+"-"+pl.OS+"-"+pl.Architecture)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
			"-ldflags", "-s -w -X "+module+"/internal/version.Version="+o.version, "-o", bin, img.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+pl.OS, "GOARCH="+pl.Architecture)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s for %s/%s: %w\n%s", img.pkg, pl.OS, pl.Architecture, err, out)
		}
		i, err := platformImage(o, img, pl, bin)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: i, Descriptor: v1.Descriptor{Platform: &pl}})
	}
	return idx, nil
}

// platformImage is the binary alone in one layer on an empty base, with its config.
func platformImage(o options, img image, pl v1.Platform, bin string) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading the binary: %w", err)
	}
	entry := img.entrypoint
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: o.created},
		{Typeflag: tar.TypeReg, Name: entry[1:], Mode: 0o555, Size: int64(len(data)), ModTime: o.created},
	} {
		err = errors.Join(err, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, werr := tw.Write(data)
			err = errors.Join(err, werr)
		}
	}
	if err := errors.Join(err, tw.Close()); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making the layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	i, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: "hack/images: " + img.pkg}})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cf, err := i.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = pl.OS, pl.Architecture, pl.Variant
	cf.Created = v1.Time{Time: o.created}
	cf.Config.User = User
	cf.Config.Entrypoint = []string{entry}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = labels(o, img)
	if i, err = mutate.ConfigFile(i, cf); err != nil {
		return nil, fmt.Errorf("setting the config: %w", err)
	}
	return i, nil
}

// labels are the org.opencontainers.image annotations of an image's config.
func labels(o options, img image) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       img.name,
		"org.opencontainers.image.description": img.description,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
	}
	if o.revision != "" {
		l["org.opencontainers.image.revision"] = o.revision
	}
	return l
}

// pushIndex pushes an index and its images with the credentials of the docker config
// (docker login, crane auth login), as other tools do.
func pushIndex(ctx context.Context, ref name.Reference, idx v1.ImageIndex) error {
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("writing %s: %w", ref, err)
	}
	return nil
}
