package main

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"
)

type options struct {
	config, krewTemplate string
	version              string
	out                  string
	platforms            []string // empty: all of the configuration's
}

// built is one release archive.
type built struct {
	platform platform
	path     string
	sha256   string
}

type result struct {
	archives  []built
	checksums string // the checksums file
	manifest  string // the rendered krew manifest
}

// modTime is the time every archive entry carries, so that an archive depends only on its
// files' contents.
var modTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func run(o options) (*result, error) {
	if o.version == "" {
		return nil, fmt.Errorf("-version is required")
	}
	c, err := loadConfig(o.config)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, fmt.Errorf("the output folder: %w", err)
	}
	work, err := os.MkdirTemp("", "release-")
	if err != nil {
		return nil, fmt.Errorf("a build folder: %w", err)
	}
	defer func() { _ = os.RemoveAll(work) }()

	r := &result{}
	for _, b := range c.Builds {
		for _, p := range b.targets() {
			if len(o.platforms) > 0 && !slices.Contains(o.platforms, p.String()) {
				continue
			}
			data := newTemplateData(c.ProjectName, o.version, p)
			bin, err := goBuild(b, data, work)
			if err != nil {
				return nil, err
			}
			for _, a := range c.Archives {
				if !a.includes(b) {
					continue
				}
				ar, err := writeArchive(a, bin, data, o.out)
				if err != nil {
					return nil, err
				}
				r.archives = append(r.archives, ar)
			}
		}
	}
	if len(r.archives) == 0 {
		return nil, errNoPlatforms
	}

	var sums strings.Builder
	for _, a := range r.archives {
		fmt.Fprintf(&sums, "%s  %s\n", a.sha256, filepath.Base(a.path))
	}
	name := c.Checksum.NameTemplate
	if name == "" {
		name = c.ProjectName + "_" + strings.TrimPrefix(o.version, "v") + "_checksums.txt"
	}
	r.checksums = filepath.Join(o.out, name)
	if err := os.WriteFile(r.checksums, []byte(sums.String()), 0o644); err != nil {
		return nil, fmt.Errorf("the checksums: %w", err)
	}

	manifest, pluginName, err := renderKrewManifest(o.krewTemplate, o.version, r.archives)
	if err != nil {
		return nil, err
	}
	r.manifest = filepath.Join(o.out, pluginName+".yaml")
	if err := os.WriteFile(r.manifest, manifest, 0o644); err != nil {
		return nil, fmt.Errorf("the krew manifest: %w", err)
	}
	return r, nil
}

// goBuild builds one binary of a build for data's platform into its own folder of work.
func goBuild(b build, data templateData, work string) (string, error) {
	p := platform{data.Os, data.Arch}
	name := b.Binary
	if p.Goos == "windows" {
		name += ".exe"
	}
	bin := filepath.Join(work, b.ID+"_"+p.Goos+"_"+p.Goarch, name)
	args := append([]string{"build"}, b.Flags...)
	var ldflags []string
	for _, l := range b.Ldflags {
		s, err := expand(l, data)
		if err != nil {
			return "", err
		}
		ldflags = append(ldflags, s)
	}
	args = append(args, "-ldflags", strings.Join(ldflags, " "), "-o", bin, b.Main)
	cmd := exec.Command("go", args...)
	cmd.Env = append(append(os.Environ(), b.Env...), "GOOS="+p.Goos, "GOARCH="+p.Goarch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s for %s: %w", b.Main, p, err)
	}
	return bin, nil
}

// entry is one file of an archive: where it comes from, its name inside, its mode.
type entry struct {
	src, name string
	mode      int64
}

func writeArchive(a archive, bin string, data templateData, out string) (built, error) {
	name, err := expand(a.NameTemplate, data)
	if err != nil {
		return built{}, err
	}
	entries := []entry{{src: bin, name: filepath.Base(bin), mode: 0o755}}
	for _, f := range a.Files {
		inside := filepath.ToSlash(f.Src)
		if f.StripParent {
			inside = path.Base(inside)
		}
		st, err := os.Stat(f.Src)
		if err != nil {
			return built{}, fmt.Errorf("archive %s: %w", a.ID, err)
		}
		entries = append(entries, entry{src: f.Src, name: inside, mode: int64(st.Mode().Perm())})
	}
	p := filepath.Join(out, name+"."+a.format(data.Os))
	f, err := os.Create(p)
	if err != nil {
		return built{}, fmt.Errorf("archive %s: %w", a.ID, err)
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if a.format(data.Os) == "zip" {
		err = writeZip(w, entries)
	} else {
		err = writeTarGz(w, entries)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return built{}, fmt.Errorf("%s: %w", p, err)
	}
	return built{platform: platform{data.Os, data.Arch}, path: p, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeTarGz(w io.Writer, entries []entry) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(b)), ModTime: modTime, Typeflag: tar.TypeReg}); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if _, err := tw.Write(b); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}

func writeZip(w io.Writer, entries []entry) error {
	zw := zip.NewWriter(w)
	for _, e := range entries {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: modTime}
		fh.SetMode(os.FileMode(e.mode))
		fw, err := zw.CreateHeader(fh)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if _, err := fw.Write(b); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("zip: %w", err)
	}
	return nil
}

// renderKrewManifest renders a krew-release-bot template: .TagName is the release and
// addURIAndSha(url, tag) becomes the url's uri and sha256 lines. A platform whose archive was
// not built (a -platforms run) is left out of the manifest; a url that names no archive of
// the configuration at all is an error.
func renderKrewManifest(templatePath, tag string, archives []built) ([]byte, string, error) {
	text, err := os.ReadFile(templatePath)
	if err != nil {
		return nil, "", fmt.Errorf("the krew manifest template: %w", err)
	}
	sums := map[string]string{}
	for _, a := range archives {
		sums[filepath.Base(a.path)] = a.sha256
	}
	const unbuilt = "unbuilt"
	data := struct{ TagName string }{tag}
	funcs := template.FuncMap{"addURIAndSha": func(url, tag string) (string, error) {
		var b strings.Builder
		t, err := template.New("").Parse(url)
		if err == nil {
			err = t.Execute(&b, struct{ TagName string }{tag})
		}
		if err != nil {
			return "", fmt.Errorf("addURIAndSha %q: %w", url, err)
		}
		sum, ok := sums[path.Base(b.String())]
		if !ok {
			sum = unbuilt
		}
		// The layout krew-release-bot writes: sha256 four spaces deep, under uri.
		return fmt.Sprintf("uri: %s\n    sha256: %s", b.String(), sum), nil
	}}
	var b strings.Builder
	t, err := template.New(filepath.Base(templatePath)).Funcs(funcs).Option("missingkey=error").Parse(string(text))
	if err == nil {
		err = t.Execute(&b, data)
	}
	if err != nil {
		return nil, "", fmt.Errorf("the krew manifest template: %w", err)
	}

	var plugin map[string]any
	if err := yaml.Unmarshal([]byte(b.String()), &plugin); err != nil {
		return nil, "", fmt.Errorf("%s renders to invalid YAML: %w", templatePath, err)
	}
	meta, _ := plugin["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	spec, _ := plugin["spec"].(map[string]any)
	platforms, _ := spec["platforms"].([]any)
	if name == "" || len(platforms) == 0 {
		return nil, "", fmt.Errorf("%s: want metadata.name and spec.platforms", templatePath)
	}
	kept := platforms[:0]
	for _, p := range platforms {
		if m, _ := p.(map[string]any); m["sha256"] != unbuilt {
			kept = append(kept, p)
		}
	}
	if len(kept) < len(archives) {
		return nil, "", fmt.Errorf("%s names %d of the %d archives built", templatePath, len(kept), len(archives))
	}
	spec["platforms"] = kept
	out, err := yaml.Marshal(plugin)
	if err != nil {
		return nil, "", fmt.Errorf("the krew manifest: %w", err)
	}
	return out, name, nil
}
