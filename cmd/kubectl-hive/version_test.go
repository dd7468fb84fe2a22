package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		code := run(t.Context(), args, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: io.Discard})
		if code != 0 || !strings.HasPrefix(out.String(), "kubectl-hive devel (go") || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("kubectl hive %s: exit code %d, printed %q; want one line with the plugin's version", strings.Join(args, " "), code, out.String())
		}
	}
}
