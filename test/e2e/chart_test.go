//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/aihub-dev/hive-operator/test/tarball"
)

// noteField is the optional field the next release of the chart adds to the Task CRD's spec,
// as a release that grows the API would.
const noteField = "note"

// chartRepo is an OCI registry holding the chart twice: the packaged chart of this build
// (make chart-package, E2E_CHART) and a next release of it whose Task CRD has one more
// optional field. Helm installs both by reference, as from any registry.
type chartRepo struct {
	ref           string // oci://<registry>/charts/hive-operator
	first, second string // their chart versions
}

func newChartRepo(t *testing.T) *chartRepo {
	t.Helper()
	archive := os.Getenv("E2E_CHART")
	if archive == "" {
		t.Fatal("E2E_CHART names no packaged chart: run the suite with `make test-e2e`, which packages it (make chart-package)")
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	repo := "oci://" + strings.TrimPrefix(reg.URL, "http://") + "/charts"
	r := &chartRepo{ref: repo + "/hive-operator", first: chartVersion(t, archive)}
	r.second = r.first + "-next"
	helm(t, "push", archive, repo, "--plain-http")
	helm(t, "push", nextRelease(t, archive, r.second), repo, "--plain-http")
	return r
}

// chartVersion reads the version of a packaged chart from its Chart.yaml.
func chartVersion(t *testing.T, archive string) string {
	t.Helper()
	files := untar(t, archive, t.TempDir())
	data, err := os.ReadFile(files["hive-operator/Chart.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	var chart struct{ Version string }
	if err := yaml.Unmarshal(data, &chart); err != nil || chart.Version == "" {
		t.Fatalf("the version of %s: %q, %v", archive, chart.Version, err)
	}
	return chart.Version
}

// nextRelease unpacks the chart, gives it the version and adds noteField to the Task CRD,
// and packages it again; it returns the new archive.
func nextRelease(t *testing.T, archive, version string) string {
	t.Helper()
	dir := t.TempDir()
	files := untar(t, archive, dir)
	crdFile := files["hive-operator/crds/swarm.aihub.dev_tasks.yaml"]
	data, err := os.ReadFile(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	crd := map[string]any{}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd, "spec", "versions")
	if len(versions) == 0 {
		t.Fatalf("%s has no versions", crdFile)
	}
	for _, v := range versions {
		if err := unstructured.SetNestedMap(v.(map[string]any),
			map[string]any{"type": "string", "description": "A note about the task, for people."},
			"schema", "openAPIV3Schema", "properties", "spec", "properties", noteField); err != nil {
			t.Fatal(err)
		}
	}
	if err := unstructured.SetNestedSlice(crd, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if data, err = yaml.Marshal(crd); err != nil {
		t.Fatal(err)
	}
	// helm show crds joins the files as they are: each must start its own document, as
	// controller-gen's do.
	if err := os.WriteFile(crdFile, append([]byte("---\n"), data...), 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	helm(t, "package", filepath.Join(dir, "hive-operator"), "--version", version, "--destination", out)
	return filepath.Join(out, fmt.Sprintf("hive-operator-%s.tgz", version))
}

// untar extracts a chart archive into dir and returns its files by their path in it.
func untar(t *testing.T, archive, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, f := range tarball.Read(t, archive) {
		if !filepath.IsLocal(f.Name) {
			continue
		}
		path := filepath.Join(dir, f.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f.Data, 0o600); err != nil {
			t.Fatal(err)
		}
		files[f.Name] = path
	}
	return files
}

// applyCRDs does what the chart's README says before an upgrade, `helm show crds <chart>
// --version <v> | kubectl apply --server-side --force-conflicts -f -`: server-side apply
// as kubectl's field manager, taking over the fields Helm's install wrote.
func applyCRDs(t *testing.T, shown string) {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(shown), 4096)
	applied := 0
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding the chart's CRDs: %v", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(obj),
			client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatalf("applying CRD %s: %v", obj.GetName(), err)
		}
		applied++
	}
	if applied != 2 {
		t.Fatalf("the chart shows %d CRDs, want the Hive's and the Task's:\n%.300s", applied, shown)
	}
}
