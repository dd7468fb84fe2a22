package statuspatch

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/types"
)

type status struct {
	Phase   string            `json:"phase,omitempty"`
	Agent   string            `json:"agent,omitempty"`
	Attempt int               `json:"attempt,omitempty"`
	Result  string            `json:"result,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func TestGuarded(t *testing.T) {
	cases := []struct {
		name          string
		before, after status
		want          string
	}{
		{
			name:   "bind sets fields",
			before: status{Phase: "Queued"},
			after:  status{Phase: "Assigned", Agent: "a-1", Attempt: 1},
			want:   `{"metadata":{"resourceVersion":"42"},"status":{"agent":"a-1","attempt":1,"phase":"Assigned"}}`,
		},
		{
			name:   "requeue clears fields with null",
			before: status{Phase: "Running", Agent: "a-1", Attempt: 1},
			after:  status{Phase: "Queued", Attempt: 1},
			want:   `{"metadata":{"resourceVersion":"42"},"status":{"agent":null,"phase":"Queued"}}`,
		},
		{
			name:   "nested maps are merged key by key",
			before: status{Labels: map[string]string{"a": "1", "b": "2"}},
			after:  status{Labels: map[string]string{"a": "1", "c": "3"}},
			want:   `{"metadata":{"resourceVersion":"42"},"status":{"labels":{"b":null,"c":"3"}}}`,
		},
		{
			name:   "no change still guards the version",
			before: status{Phase: "Queued"},
			after:  status{Phase: "Queued"},
			want:   `{"metadata":{"resourceVersion":"42"},"status":{}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Guarded("42", tc.before, tc.after)
			if err != nil {
				t.Fatal(err)
			}
			if p.Type() != types.MergePatchType {
				t.Fatalf("patch type %s, want %s", p.Type(), types.MergePatchType)
			}
			data, err := p.Data(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonpatch.Equal(data, []byte(tc.want)) {
				t.Fatalf("patch %s, want %s", data, tc.want)
			}
			// Applied to the object, the patch gives the new status.
			obj, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": "42"}, "status": tc.before})
			got, err := jsonpatch.MergePatch(obj, data)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": "42"}, "status": tc.after})
			if !jsonpatch.Equal(got, want) {
				t.Fatalf("patched object %s, want %s", got, want)
			}
		})
	}
}

func TestGuardedErrors(t *testing.T) {
	if _, err := Guarded("", status{}, status{}); err == nil {
		t.Error("an empty resourceVersion was accepted")
	}
	if _, err := Guarded("1", func() {}, status{}); err == nil {
		t.Error("an unserialisable status was accepted")
	}
	if _, err := Guarded("1", status{}, make(chan int)); err == nil {
		t.Error("an unserialisable new status was accepted")
	}
	if _, err := Guarded("1", "a string", status{}); err == nil {
		t.Error("a status that is not an object was accepted")
	}
}
