package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/template"

	"sigs.k8s.io/yaml"
)

// config is the part of goreleaser's configuration (version 2) this command carries out.
type config struct {
	Version     int       `json:"version"`
	ProjectName string    `json:"project_name"`
	Builds      []build   `json:"builds"`
	Archives    []archive `json:"archives"`
	Checksum    checksum  `json:"checksum"`
}

type build struct {
	ID      string     `json:"id"`
	Main    string     `json:"main"`
	Binary  string     `json:"binary"`
	Env     []string   `json:"env"`
	Flags   []string   `json:"flags"`
	Ldflags []string   `json:"ldflags"`
	Goos    []string   `json:"goos"`
	Goarch  []string   `json:"goarch"`
	Ignore  []platform `json:"ignore"`
}

type platform struct {
	Goos   string `json:"goos"`
	Goarch string `json:"goarch"`
}

func (p platform) String() string { return p.Goos + "/" + p.Goarch }

type archive struct {
	ID              string           `json:"id"`
	IDs             []string         `json:"ids"`
	NameTemplate    string           `json:"name_template"`
	Formats         []string         `json:"formats"`
	FormatOverrides []formatOverride `json:"format_overrides"`
	Files           []archiveFile    `json:"files"`
}

type formatOverride struct {
	Goos    string   `json:"goos"`
	Formats []string `json:"formats"`
}

// archiveFile is an extra file of an archive: a path, or {src, strip_parent}.
type archiveFile struct {
	Src         string `json:"src"`
	StripParent bool   `json:"strip_parent"`
}

func (f *archiveFile) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &f.Src); err != nil {
			return fmt.Errorf("archive file: %w", err)
		}
		return nil
	}
	type plain archiveFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode((*plain)(f)); err != nil {
		return fmt.Errorf("archive file: %w", err)
	}
	return nil
}

type checksum struct {
	NameTemplate string `json:"name_template"`
	Algorithm    string `json:"algorithm"`
}

// supportedFormats are the archive formats this command writes.
var supportedFormats = []string{"tar.gz", "zip"}

// loadConfig reads a goreleaser configuration, refusing keys and values this command does
// not implement.
func loadConfig(path string) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the release configuration: %w", err)
	}
	var c config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w (hack/release implements only part of goreleaser's configuration)", path, err)
	}
	if c.Version != 2 {
		return nil, fmt.Errorf("%s: version %d, want 2", path, c.Version)
	}
	if c.ProjectName == "" || len(c.Builds) == 0 || len(c.Archives) == 0 {
		return nil, fmt.Errorf("%s: project_name, builds and archives must be set", path)
	}
	for _, a := range c.Archives {
		for _, f := range append(slices.Clone(a.Formats), overrideFormats(a)...) {
			if !slices.Contains(supportedFormats, f) {
				return nil, fmt.Errorf("%s: archive %s: format %q, this command writes only %v", path, a.ID, f, supportedFormats)
			}
		}
		if len(a.Formats) > 1 {
			return nil, fmt.Errorf("%s: archive %s: one format per archive", path, a.ID)
		}
	}
	if a := c.Checksum.Algorithm; a != "" && a != "sha256" {
		return nil, fmt.Errorf("%s: checksum algorithm %q, krew needs sha256", path, a)
	}
	return &c, nil
}

func overrideFormats(a archive) []string {
	var fs []string
	for _, o := range a.FormatOverrides {
		if len(o.Formats) != 1 {
			return []string{strings.Join(o.Formats, "+")}
		}
		fs = append(fs, o.Formats...)
	}
	return fs
}

// targets are the platforms a build produces: goos × goarch minus ignore, in that order.
func (b build) targets() []platform {
	var ps []platform
	for _, goos := range b.Goos {
		for _, goarch := range b.Goarch {
			p := platform{goos, goarch}
			if !slices.Contains(b.Ignore, p) {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// format is the archive format for a platform: its override, else the archive's, else tar.gz.
func (a archive) format(goos string) string {
	for _, o := range a.FormatOverrides {
		if o.Goos == goos {
			return o.Formats[0]
		}
	}
	if len(a.Formats) > 0 {
		return a.Formats[0]
	}
	return "tar.gz"
}

// includes reports whether the archive packs a build: ids empty means every build.
func (a archive) includes(b build) bool { return len(a.IDs) == 0 || slices.Contains(a.IDs, b.ID) }

// templateData are the goreleaser template fields the configuration uses.
type templateData struct {
	ProjectName string
	Tag         string
	Version     string // Tag without its leading v
	Os, Arch    string
}

func newTemplateData(project, tag string, p platform) templateData {
	return templateData{ProjectName: project, Tag: tag, Version: strings.TrimPrefix(tag, "v"), Os: p.Goos, Arch: p.Goarch}
}

// expand renders one goreleaser template; a field it does not know is an error.
func expand(text string, data templateData) (string, error) {
	t, err := template.New("").Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", text, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("template %q: %w", text, err)
	}
	return b.String(), nil
}

var errNoPlatforms = errors.New("no platform of the configuration is selected")
