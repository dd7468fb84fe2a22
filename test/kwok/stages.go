package kwok

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// Names of the stages kwokctl installs when no Stage is configured (kwok v0.8.0,
// pkg/kwokctl/runtime/cluster.go: getDefaultNodeStages and getDefaultPodStages).
const (
	// StageNodeInitialize makes a new node Ready with addresses, capacity and node info.
	StageNodeInitialize = "node-initialize"
	// StageNodeHeartbeat renews the node's conditions every ten minutes or so; kwok's node
	// lease controller renews the node's Lease in between, which is what keeps it Ready.
	StageNodeHeartbeat = "node-heartbeat-with-lease"
	// StagePodReady makes a scheduled pending pod Running and Ready at once.
	StagePodReady = "pod-ready"
	// StagePodComplete makes a running pod owned by a Job Succeeded at once.
	StagePodComplete = "pod-complete"
	// StagePodDelete finishes the graceful deletion of a pod at once (deletes it with grace 0).
	StagePodDelete = "pod-delete"
)

// DefaultPodStages are kwokctl's default pod stages; OmitDefaultStages: DefaultPodStages
// leaves pods to the configured Stages alone.
var DefaultPodStages = []string{StagePodReady, StagePodComplete, StagePodDelete}

// Module is the kwok module hack/setup-envtest.sh builds kwok and kwokctl from. Its source,
// which that build leaves in the Go module cache, holds the default stages.
const Module = "sigs.k8s.io/kwok@v0.8.0"

// defaultStageFiles are kwokctl's default stages, in the order kwokctl lists them, as files
// of the kwok module. kwokctl installs them only when no Stage is configured at all (kwok
// v0.8.0, pkg/kwokctl/runtime/cluster.go, Cluster.Save): a configured Stage replaces every
// default, the node stages included, so a cluster with custom stages gets these besides.
var defaultStageFiles = []struct{ name, path string }{
	{StageNodeInitialize, "kustomize/stage/node/fast/node-initialize.yaml"},
	{StageNodeHeartbeat, "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"},
	{StagePodReady, "kustomize/stage/pod/fast/pod-ready.yaml"},
	{StagePodComplete, "kustomize/stage/pod/fast/pod-complete.yaml"},
	{StagePodDelete, "kustomize/stage/pod/fast/pod-delete.yaml"},
}

type stageDoc struct{ name, yaml string }

// defaultStages reads the default stages from the kwok module's source, downloading it if
// the module cache lacks it.
var defaultStages = sync.OnceValues(func() ([]stageDoc, error) {
	cmd := exec.Command("go", "mod", "download", "-json", Module)
	cmd.Dir = os.TempDir() // outside any module, so no go.mod is consulted
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Dir == "" {
		return nil, fmt.Errorf("finding the source of %s: %s: %w", Module, mod.Error, errors.Join(err, jerr))
	}
	docs := make([]stageDoc, 0, len(defaultStageFiles))
	for _, f := range defaultStageFiles {
		b, err := os.ReadFile(filepath.Join(mod.Dir, f.path))
		if err != nil {
			return nil, fmt.Errorf("reading kwok's default stage %s: %w", f.name, err)
		}
		docs = append(docs, stageDoc{f.name, string(b)})
	}
	return docs, nil
})

// DefaultStage returns the YAML of one of kwokctl's default stages by name (the Stage*
// constants), and whether it is one.
func DefaultStage(name string) (string, bool, error) {
	docs, err := defaultStages()
	if err != nil {
		return "", false, err
	}
	for _, s := range docs {
		if s.name == name {
			return s.yaml, true, nil
		}
	}
	return "", false, nil
}

// PodReadyStage returns a Stage that makes a scheduled pending pod Running and Ready, with the
// same status as kwok's default pod-ready stage, but only delay after kwok first sees the pod
// on its node, plus a random extra of up to jitter. With a selector, only pods with all of
// those labels get it; other pods keep the stage they would get without it (the default
// pod-ready when it is not omitted).
//
// The stage has weight 1 against the default pod-ready's 0: when several stages match a pod,
// kwok picks among them at random by weight, and skips those of weight 0 when any has more
// (kwok v0.8.0, pkg/utils/lifecycle/lifecycle.go, Lifecycle.Match), so a pod this stage
// selects always gets this stage. kwok restarts the delay whenever the pod changes while it
// waits (a new resourceVersion replaces the pending job: pkg/kwok/controllers/
// pod_controller.go, preprocess and addStageJob).
func PodReadyStage(name string, delay, jitter time.Duration, selector map[string]string) (string, error) {
	podReady, _, err := DefaultStage(StagePodReady)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	writeHeader(&b, name)
	b.WriteString("  weight: 1\n")
	if delay > 0 || jitter > 0 {
		b.WriteString("  delay:\n")
		fmt.Fprintf(&b, "    durationMilliseconds: %d\n", delay.Milliseconds())
		if jitter > 0 {
			// kwok waits a duration drawn between durationMilliseconds and
			// jitterDurationMilliseconds.
			fmt.Fprintf(&b, "    jitterDurationMilliseconds: %d\n", (delay + jitter).Milliseconds())
		}
	}
	b.WriteString("  selector:\n")
	writeMatchLabels(&b, selector)
	// The rest (the default's match expressions and status template) is kwok's pod-ready.
	_, rest, found := strings.Cut(podReady, "\n  selector:\n")
	if !found {
		return "", fmt.Errorf("kwok's %s stage has no selector to replace", StagePodReady)
	}
	b.WriteString(rest)
	return b.String(), nil
}

// PodDeleteStage returns a Stage that finishes the graceful deletion of pods at once, as
// kwok's default pod-delete does, except for pods with any of the label keys in
// exceptLabels: those stay Terminating until something deletes them with grace period 0 (a
// test's own kubelet, once the pod's agent has stopped). Use it with
// OmitDefaultStages: []string{StagePodDelete}.
func PodDeleteStage(name string, exceptLabels ...string) string {
	var b strings.Builder
	writeHeader(&b, name)
	b.WriteString("  selector:\n    matchExpressions:\n")
	b.WriteString("    - key: '.metadata.deletionTimestamp'\n      operator: 'Exists'\n")
	for _, key := range exceptLabels {
		// A jq path; label keys hold no single quotes, so the YAML single-quoted string
		// needs no escapes.
		fmt.Fprintf(&b, "    - key: '.metadata.labels[%s]'\n      operator: 'DoesNotExist'\n", strconv.Quote(key))
	}
	b.WriteString("  next:\n    delete: true\n")
	return b.String()
}

func writeHeader(b *strings.Builder, name string) {
	b.WriteString("apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n")
	fmt.Fprintf(b, "  name: %s\n", strconv.Quote(name))
	b.WriteString("spec:\n  resourceRef:\n    apiGroup: v1\n    kind: Pod\n")
}

func writeMatchLabels(b *strings.Builder, labels map[string]string) {
	if len(labels) == 0 {
		return
	}
	b.WriteString("    matchLabels:\n")
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		// Go's quoting of printable ASCII is a valid YAML double-quoted string.
		fmt.Fprintf(b, "      %s: %s\n", strconv.Quote(k), strconv.Quote(labels[k]))
	}
}

// stageMeta is what Create checks of a Stage document.
type stageMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ResourceRef struct {
			Kind string `json:"kind"`
		} `json:"resourceRef"`
		Selector *struct{} `json:"selector"`
	} `json:"spec"`
}

// stagesConfig returns the kwokctl configuration (a multi-document YAML) holding the default
// stages not omitted and the extra stages, and whether one is needed at all: with no extra
// stage and nothing omitted, kwokctl's own defaults are the same.
func stagesConfig(extra, omit []string) (string, bool, error) {
	if len(extra) == 0 && len(omit) == 0 {
		return "", false, nil
	}
	defaults, err := defaultStages()
	if err != nil {
		return "", false, err
	}
	for _, name := range omit {
		if !slices.ContainsFunc(defaults, func(d stageDoc) bool { return d.name == name }) {
			return "", false, fmt.Errorf("omitting stage %q: not one of kwokctl's default stages", name)
		}
	}
	var docs []string
	for _, s := range defaults {
		if !slices.Contains(omit, s.name) {
			docs = append(docs, s.yaml)
		}
	}
	docs = append(docs, extra...)
	seen := map[string]bool{}
	var errs []error
	for i, doc := range docs {
		var m stageMeta
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			errs = append(errs, fmt.Errorf("stage %d: %w", i, err))
			continue
		}
		switch {
		case m.APIVersion != "kwok.x-k8s.io/v1alpha1" || m.Kind != "Stage":
			errs = append(errs, fmt.Errorf("stage %d is a %s %s, not a kwok.x-k8s.io/v1alpha1 Stage", i, m.APIVersion, m.Kind))
		case m.Metadata.Name == "":
			errs = append(errs, fmt.Errorf("stage %d has no name", i))
		case seen[m.Metadata.Name]:
			errs = append(errs, fmt.Errorf("two stages are named %q", m.Metadata.Name))
		case m.Spec.ResourceRef.Kind == "":
			errs = append(errs, fmt.Errorf("stage %s has no spec.resourceRef.kind", m.Metadata.Name))
		case m.Spec.Selector == nil:
			// kwok ignores a stage without a selector (lifecycle.NewStage returns nil).
			errs = append(errs, fmt.Errorf("stage %s has no spec.selector: kwok would ignore it", m.Metadata.Name))
		}
		seen[m.Metadata.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return "", false, fmt.Errorf("checking the kwok stages: %w", err)
	}
	var b strings.Builder
	for _, doc := range docs {
		b.WriteString("---\n")
		b.WriteString(strings.TrimSpace(doc))
		b.WriteString("\n")
	}
	return b.String(), true, nil
}
