// Command crd-trim removes the descriptions of the embedded pod template from the Hive CRD.
//
// The Kubernetes PodSpec's own documentation makes the generated CRD about 640 KB, more than
// `kubectl apply` can keep in its last-applied annotation (256 KiB). The pod template's
// fields are documented by `kubectl explain pod.spec`; the Hive's own fields keep theirs.
//
// Usage: go run ./hack/crd-trim FILE...
package main

import (
	"bytes"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// trimmedPaths are the schema properties, from the root of each version's schema, whose
// descendants lose their descriptions (the property itself keeps its own).
var trimmedPaths = [][]string{
	{"spec", "template"},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crd-trim FILE...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := trimFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "crd-trim: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

func trimFile(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(in, &crd); err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	for _, v := range versions {
		version, _ := v.(map[string]any)
		schema, _ := version["schema"].(map[string]any)
		root, _ := schema["openAPIV3Schema"].(map[string]any)
		for _, p := range trimmedPaths {
			if node := lookup(root, p); node != nil {
				for _, child := range children(node) {
					stripDescriptions(child)
				}
			}
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	out = append([]byte("---\n"), out...)
	if bytes.Equal(in, out) {
		return nil
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	return nil
}

// lookup follows a path of property names from a schema node.
func lookup(node map[string]any, path []string) map[string]any {
	for _, name := range path {
		props, _ := node["properties"].(map[string]any)
		next, ok := props[name].(map[string]any)
		if !ok {
			return nil
		}
		node = next
	}
	return node
}

// children returns the sub-schemas of a schema node: its properties, items and
// additionalProperties.
func children(node map[string]any) []map[string]any {
	var out []map[string]any
	if props, ok := node["properties"].(map[string]any); ok {
		for _, p := range props {
			if m, ok := p.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	for _, key := range []string{"items", "additionalProperties"} {
		if m, ok := node[key].(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func stripDescriptions(node map[string]any) {
	delete(node, "description")
	for _, child := range children(node) {
		stripDescriptions(child)
	}
}
