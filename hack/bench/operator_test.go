package main

import (
	"maps"
	"testing"
)

func TestParseRequestCounts(t *testing.T) {
	text := `# HELP rest_client_requests_total Number of HTTP requests, partitioned by status code, method, and host.
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="GET"} 120
rest_client_requests_total{code="201",host="127.0.0.1:6443",method="POST"} 4
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="PATCH"} 1000
rest_client_requests_total{code="409",host="127.0.0.1:6443",method="PATCH"} 3
rest_client_requests_total{code="404",host="127.0.0.1:6443",method="GET"} 1.5e+01
rest_client_request_duration_seconds_count{host="127.0.0.1:6443",verb="GET"} 99
rest_client_requests_total{code="200",host="a\"b",method="PUT"} 2
rest_client_requests_total{code="200",host="x"} 5
`
	got := parseRequestCounts(text)
	want := map[string]float64{"GET": 135, "POST": 4, "PATCH": 1003, "PUT": 2}
	if !maps.Equal(got, want) {
		t.Errorf("parseRequestCounts = %v, want %v", got, want)
	}
}

func TestLabel(t *testing.T) {
	tests := []struct {
		set, name, want string
	}{
		{`code="200",method="GET"`, "method", "GET"},
		{`code="200",method="GET"`, "code", "200"},
		{`host="a\"b,c",method="PATCH"`, "method", "PATCH"},
		{`host="a\"b,c",method="PATCH"`, "host", `a"b,c`},
		{`code="200"`, "method", ""},
		{``, "method", ""},
	}
	for _, tt := range tests {
		if got := label(tt.set, tt.name); got != tt.want {
			t.Errorf("label(%s, %s) = %q, want %q", tt.set, tt.name, got, tt.want)
		}
	}
}

func TestSplitRequests(t *testing.T) {
	before := map[string]float64{"GET": 10, "PATCH": 5}
	after := map[string]float64{"GET": 12, "PATCH": 105, "POST": 3, "DELETE": 1, "PUT": 1}
	delta := subtractCounts(after, before)
	if want := map[string]float64{"GET": 2, "PATCH": 100, "POST": 3, "DELETE": 1, "PUT": 1}; !maps.Equal(delta, want) {
		t.Errorf("subtractCounts = %v, want %v", delta, want)
	}
	writes, reads := splitRequests(delta)
	if writes != 105 || reads != 2 {
		t.Errorf("splitRequests = %v writes, %v reads; want 105, 2", writes, reads)
	}
}
