package main

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/aihub-dev/hive-operator/test/tarball"
)

// The tests run from the repository's root, where .goreleaser.yaml names its files.
func chdirRoot(t *testing.T) {
	t.Helper()
	t.Chdir(filepath.Join("..", ".."))
}

// krewPlugin is the part of krew's Plugin manifest the tests read.
type krewPlugin struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			Sha256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

func TestTheReleaseConfiguration(t *testing.T) {
	chdirRoot(t)
	c, err := loadConfig(".goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}, {"windows", "amd64"}}
	if got := c.Builds[0].targets(); !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	a := c.Archives[0]
	if a.format("windows") != "zip" || a.format("linux") != "tar.gz" {
		t.Errorf("formats: windows %s, linux %s", a.format("windows"), a.format("linux"))
	}
	name, err := expand(a.NameTemplate, newTemplateData(c.ProjectName, "v1.2.3", platform{"darwin", "arm64"}))
	if err != nil || name != "kubectl-hive_v1.2.3_darwin_arm64" {
		t.Errorf("archive name %q, %v", name, err)
	}
}

func TestLoadConfigRefusesWhatItDoesNotImplement(t *testing.T) {
	const good = `version: 2
project_name: p
builds: [{id: b, main: ., binary: p, goos: [linux], goarch: [amd64]}]
archives: [{id: a, name_template: "{{ .ProjectName }}", formats: [tar.gz]}]
`
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", good + "nfpms: []\n", `unknown field "nfpms"`},
		{"unknown build key", strings.Replace(good, "binary: p", "binary: p, hooks: {}", 1), `unknown field "hooks"`},
		{"unknown file key", strings.Replace(good, "formats: [tar.gz]", "formats: [tar.gz], files: [{src: x, dst: y}]", 1), `unknown field "dst"`},
		{"format", strings.Replace(good, "[tar.gz]", "[tar.xz]", 1), `format "tar.xz"`},
		{"two formats", strings.Replace(good, "[tar.gz]", "[tar.gz, zip]", 1), "one format per archive"},
		{"override with two formats", strings.Replace(good, "formats: [tar.gz]", "formats: [tar.gz], format_overrides: [{goos: windows, formats: [zip, tar.gz]}]", 1), `format "zip+tar.gz"`},
		{"version", strings.Replace(good, "version: 2", "version: 1", 1), "version 1, want 2"},
		{"no builds", strings.Replace(good, "builds: [{id: b, main: ., binary: p, goos: [linux], goarch: [amd64]}]", "builds: []", 1), "must be set"},
		{"checksum", good + "checksum: {algorithm: md5}\n", `"md5", krew needs sha256`},
		{"not yaml", "version: [", "yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "goreleaser.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := loadConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestExpandRefusesAnUnknownField(t *testing.T) {
	if _, err := expand("{{ .Commit }}", templateData{}); err == nil {
		t.Error("want an error for a field the configuration cannot use")
	}
	if _, err := expand("{{ .Tag", templateData{}); err == nil {
		t.Error("want an error for a template that does not parse")
	}
}

// TestTheKrewManifestNamesEveryArchive renders the manifest as a full release does, with an
// archive for every platform of the configuration, without building five binaries.
func TestTheKrewManifestNamesEveryArchive(t *testing.T) {
	chdirRoot(t)
	c, err := loadConfig(".goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var archives []built
	for _, p := range c.Builds[0].targets() {
		name, err := expand(c.Archives[0].NameTemplate, newTemplateData(c.ProjectName, "v1.2.3", p))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(p.String()))
		archives = append(archives, built{platform: p, path: name + "." + c.Archives[0].format(p.Goos), sha256: hex.EncodeToString(sum[:])})
	}
	out, name, err := renderKrewManifest(".krew.yaml", "v1.2.3", archives)
	if err != nil {
		t.Fatal(err)
	}
	if name != "hive" {
		t.Errorf("plugin %q, want hive (kubectl hive)", name)
	}
	var m krewPlugin
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if m.Spec.Version != "v1.2.3" || len(m.Spec.Platforms) != len(archives) {
		t.Fatalf("version %s, %d platforms, want v1.2.3 and %d:\n%s", m.Spec.Version, len(m.Spec.Platforms), len(archives), out)
	}
	for i, p := range m.Spec.Platforms {
		a := archives[i]
		sel := platform{p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]}
		wantURI := "https://github.com/aihub-dev/hive-operator/releases/download/v1.2.3/" + a.path
		wantBin := "kubectl-hive"
		if sel.Goos == "windows" {
			wantBin += ".exe"
		}
		if sel != a.platform || p.URI != wantURI || p.Sha256 != a.sha256 || p.Bin != wantBin {
			t.Errorf("platform %d: %s %s %s %s, want %s %s %s %s", i, sel, p.URI, p.Sha256, p.Bin, a.platform, wantURI, a.sha256, wantBin)
		}
	}

	// An archive the template does not name is an error, not a manifest that lacks it.
	extra := append(slices.Clone(archives), built{platform: platform{"plan9", "amd64"}, path: "kubectl-hive_v1.2.3_plan9_amd64.tar.gz"})
	if _, _, err := renderKrewManifest(".krew.yaml", "v1.2.3", extra); err == nil || !strings.Contains(err.Error(), "names 5 of the 6") {
		t.Errorf("an archive the manifest lacks: %v", err)
	}
}

func TestRenderKrewManifestRefusesABrokenTemplate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, text, want string }{
		{"parse", "{{ .TagName", "unclosed action"},
		{"field", "{{ .Tag }}", "can't evaluate field Tag"},
		{"yaml", "spec: [", "invalid YAML"},
		{"no platforms", "metadata: {name: hive}\nspec: {}\n", "want metadata.name and spec.platforms"},
		{"url", `spec: {x: '{{ addURIAndSha "{{ .Nope }}" .TagName }}'}`, "can't evaluate field Nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := renderKrewManifest(p, "v1", nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRunNeedsAVersionAndAPlatform(t *testing.T) {
	chdirRoot(t)
	if _, err := run(options{config: ".goreleaser.yaml", krewTemplate: ".krew.yaml", out: t.TempDir()}); err == nil {
		t.Error("a run without -version succeeded")
	}
	_, err := run(options{config: ".goreleaser.yaml", krewTemplate: ".krew.yaml", out: t.TempDir(), version: "v1", platforms: []string{"plan9/mips"}})
	if !errors.Is(err, errNoPlatforms) {
		t.Errorf("a platform the configuration lacks: %v", err)
	}
}

// TestKubectlHiveInstallsWithKrew builds this machine's release archive as a release does,
// installs it with krew from the rendered manifest (krew checks the archive against the
// manifest's sha256), and runs the plugin krew put on the PATH.
func TestKubectlHiveInstallsWithKrew(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin and krew")
	}
	chdirRoot(t)
	const version = "v0.0.0-krew-test"
	out := t.TempDir()
	host := runtime.GOOS + "/" + runtime.GOARCH
	r, err := run(options{config: ".goreleaser.yaml", krewTemplate: ".krew.yaml", version: version, out: out, platforms: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.archives) != 1 {
		t.Fatalf("built %d archives for %s, want 1", len(r.archives), host)
	}
	archive := r.archives[0].path

	// The checksums file and the archive agree, and the archive holds what the configuration lists.
	sums, err := os.ReadFile(r.checksums)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if want := fmt.Sprintf("%x  %s\n", sum, filepath.Base(archive)); string(sums) != want {
		t.Errorf("checksums.txt:\n%s\nwant\n%s", sums, want)
	}
	if names := tarNames(t, archive); !slices.Equal(names, []string{"kubectl-hive", "LICENSE", "kubectl_complete-hive"}) {
		t.Errorf("the archive holds %v", names)
	}

	krew := filepath.Join(t.TempDir(), "krew")
	build := exec.Command("go", "build", "-modfile=hack/tools/krew/go.mod", "-o", krew, "sigs.k8s.io/krew/cmd/krew")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building krew: %v\n%s", err, b)
	}
	root := t.TempDir()
	env := append(os.Environ(), "KREW_ROOT="+root, "KREW_NO_UPGRADE_CHECK=1")
	install := exec.Command(krew, "install", "--manifest="+r.manifest, "--archive="+archive)
	install.Env = env
	if b, err := install.CombinedOutput(); err != nil {
		t.Fatalf("krew install: %v\n%s", err, b)
	}

	// kubectl runs a plugin by finding kubectl-<name> on the PATH: only krew's bin is on it here.
	t.Setenv("PATH", filepath.Join(root, "bin"))
	found, err := exec.LookPath("kubectl-hive")
	if err != nil {
		t.Fatalf("krew put no kubectl-hive on the PATH: %v", err)
	}
	got, err := exec.Command(found, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl-hive version: %v\n%s", err, got)
	}
	if !strings.HasPrefix(string(got), "kubectl-hive "+version+" ") {
		t.Errorf("the installed plugin says %q, want release %s", got, version)
	}
	if _, err := os.Stat(filepath.Join(root, "store", "hive", version, "kubectl_complete-hive")); err != nil {
		t.Errorf("krew did not keep the completion script: %v", err)
	}

	// krew refuses an archive that is not the one the manifest names.
	tampered := filepath.Join(t.TempDir(), filepath.Base(archive))
	if err := os.WriteFile(tampered, append(b, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	again := exec.Command(krew, "install", "--manifest="+r.manifest, "--archive="+tampered)
	again.Env = append(os.Environ(), "KREW_ROOT="+t.TempDir(), "KREW_NO_UPGRADE_CHECK=1")
	if b, err := again.CombinedOutput(); err == nil || !strings.Contains(string(b), "checksum does not match") {
		t.Errorf("krew installed a tampered archive: %v\n%s", err, b)
	}
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	var names []string
	for _, f := range tarball.Read(t, path) {
		names = append(names, f.Name)
	}
	return names
}

// TestWindowsGetsAZip packs a stand-in binary as the configuration does for Windows.
func TestWindowsGetsAZip(t *testing.T) {
	chdirRoot(t)
	c, err := loadConfig(".goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubectl-hive.exe")
	if err := os.WriteFile(bin, []byte("MZ"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	a, err := writeArchive(c.Archives[0], bin, newTemplateData(c.ProjectName, "v1", platform{"windows", "amd64"}), out)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(a.path) != "kubectl-hive_v1_windows_amd64.zip" {
		t.Errorf("archive %s", a.path)
	}
	zr, err := zip.OpenReader(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = zr.Close() }()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"kubectl-hive.exe", "LICENSE", "kubectl_complete-hive"}) {
		t.Errorf("the zip holds %v", names)
	}
	if m := zr.File[0].Mode(); m.Perm() != 0o755 {
		t.Errorf("the binary's mode is %v", m)
	}
}
