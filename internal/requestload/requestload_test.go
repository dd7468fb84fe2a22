package requestload

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestSumAddsTheGatewaysUp(t *testing.T) {
	cases := map[string]struct {
		reports []Report
		want    map[string]Load
	}{
		"no gateway": {want: map[string]Load{}},
		"two gateways, one agent shared": {
			reports: []Report{
				{Hives: map[string]Hive{"ns/a": {Queued: 2, Agents: map[string]int{"a-1": 3}}}},
				{Hives: map[string]Hive{"ns/a": {Agents: map[string]int{"a-1": 1, "a-2": 2}}, "ns/b": {Queued: 1}}},
			},
			want: map[string]Load{
				"ns/a": {Queued: 2, InFlight: 6, Agents: map[string]int{"a-1": 4, "a-2": 2}},
				"ns/b": {Queued: 1},
			},
		},
		"nothing queued or in flight is left out; negative counts are none": {
			reports: []Report{{Hives: map[string]Hive{"ns/a": {Queued: -1, Agents: map[string]int{"a-1": 0, "a-2": -3}}, "ns/b": {}}}},
			want:    map[string]Load{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Sum(tc.reports); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Sum = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestChangedNamesEveryHiveWhoseLoadMoved(t *testing.T) {
	prev := map[string]Load{
		"ns/same":  {Queued: 1, InFlight: 1, Agents: map[string]int{"x": 1}},
		"ns/moved": {InFlight: 1, Agents: map[string]int{"x": 1}},
		"ns/gone":  {Queued: 1},
		"ns/queue": {Queued: 1},
	}
	cur := map[string]Load{
		"ns/same":  {Queued: 1, InFlight: 1, Agents: map[string]int{"x": 1}},
		"ns/moved": {InFlight: 1, Agents: map[string]int{"y": 1}},
		"ns/new":   {Queued: 3},
		"ns/queue": {Queued: 2},
	}
	if got, want := Changed(prev, cur), []string{"ns/gone", "ns/moved", "ns/new", "ns/queue"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	if got := Changed(cur, cur); got != nil {
		t.Errorf("Changed(cur, cur) = %v", got)
	}
	if l := cur["ns/moved"]; l.Total() != 1 {
		t.Errorf("Total = %d", l.Total())
	}
}

// gateway serves a report that the test may change, as a gateway's /load does.
type gateway struct {
	mu     sync.Mutex
	report Report
	status int
}

func (g *gateway) set(r Report) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.report = r
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if req.URL.Path != Path {
		http.NotFound(w, req)
		return
	}
	if g.status != 0 {
		w.WriteHeader(g.status)
		return
	}
	_ = json.NewEncoder(w).Encode(g.report)
}

func TestThePollerSumsTheGatewaysAndTellsWhatChanged(t *testing.T) {
	g1, g2 := &gateway{}, &gateway{}
	s1, s2 := httptest.NewServer(g1), httptest.NewServer(g2)
	defer s1.Close()
	defer s2.Close()
	broken := httptest.NewServer(&gateway{status: http.StatusInternalServerError})
	defer broken.Close()
	garbled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{")) }))
	defer garbled.Close()
	urls := []string{s1.URL + Path, s2.URL + Path, broken.URL + Path, garbled.URL + Path, "http://127.0.0.1:1" + Path, "http://\x00"}
	var targetsErr error
	var changed [][]string
	p := NewPoller(func(context.Context) ([]string, error) { return urls, targetsErr }, func(keys []string) { changed = append(changed, keys) }, PollerOptions{})

	g1.set(Report{Hives: map[string]Hive{"ns/a": {Queued: 1, Agents: map[string]int{"a-1": 2}}}})
	g2.set(Report{Hives: map[string]Hive{"ns/a": {Agents: map[string]int{"a-1": 1}}}})
	p.Poll(t.Context())
	if got := p.Load("ns/a"); got.Queued != 1 || got.InFlight != 3 || got.Agents["a-1"] != 3 {
		t.Errorf("load %+v: the gateways that answered, summed", got)
	}
	p.Poll(t.Context())
	g1.set(Report{})
	p.Poll(t.Context())
	if want := [][]string{{"ns/a"}, {"ns/a"}}; !reflect.DeepEqual(changed, want) {
		t.Errorf("changed %v, want %v: once when it came, none when it stayed, once when it moved", changed, want)
	}
	if got := p.Load("ns/a"); got.InFlight != 1 || got.Queued != 0 {
		t.Errorf("load %+v after the first gateway emptied", got)
	}

	// Without the list of gateways, the last load stands.
	targetsErr = errors.New("the cache is gone")
	p.Poll(t.Context())
	if got := p.Load("ns/a"); got.InFlight != 1 {
		t.Errorf("load %+v after a failed discovery", got)
	}
	if !p.NeedLeaderElection() {
		t.Error("a poller must run on the leader only")
	}
}

func TestThePollerPollsUntilItsContextEnds(t *testing.T) {
	g := &gateway{report: Report{Hives: map[string]Hive{"ns/a": {Queued: 4}}}}
	s := httptest.NewServer(g)
	defer s.Close()
	polled := make(chan []string, 10)
	p := NewPoller(func(context.Context) ([]string, error) { return []string{s.URL + Path}, nil },
		func(keys []string) { polled <- keys }, PollerOptions{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	select {
	case keys := <-polled:
		if len(keys) != 1 || keys[0] != "ns/a" {
			t.Errorf("changed %v", keys)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no poll")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start returned %v", err)
	}
}

func TestEndpointsAreReadAsTheAPIDefinesThem(t *testing.T) {
	for _, tc := range []struct {
		c    discoveryv1.EndpointConditions
		want bool
	}{
		{discoveryv1.EndpointConditions{}, true},
		{discoveryv1.EndpointConditions{Ready: ptr.To(false)}, false},
		{discoveryv1.EndpointConditions{Ready: ptr.To(true)}, true},
		// A gateway shutting down is not ready but still serves, and finishes its requests.
		{discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}, true},
		{discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false)}, false},
	} {
		if got := serving(tc.c); got != tc.want {
			t.Errorf("serving(%+v) = %v", tc.c, got)
		}
	}
	ports := []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8000)}, {Name: ptr.To("metrics")}, {Name: ptr.To("metrics"), Port: ptr.To[int32](8082)}}
	if got := portNumber(ports, "metrics"); got != 8082 {
		t.Errorf("port %d", got)
	}
	if got := portNumber(ports, "load"); got != 0 {
		t.Errorf("port %d for a name the slice does not have", got)
	}
}
