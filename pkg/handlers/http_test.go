package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

func TestHTTP(t *testing.T) {
	task := &agent.Task{Name: "t1", Namespace: "ns", Hive: "h", Attempt: 3, Input: `{"prompt":"hi"}`}
	// describe answers with what it received.
	describe := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s %s|%s|%s|%s|%s|%s|%s", r.Method, r.URL.Path,
			r.Header.Get("Content-Type"), r.Header.Get("X-Task-Name"), r.Header.Get("X-Task-Namespace"),
			r.Header.Get("X-Task-Attempt"), r.Header.Get("X-Task-Hive"), body)
	}
	status := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(code)
			_, _ = io.WriteString(w, body)
		}
	}
	// streamed writes n bytes without a Content-Length.
	streamed := func(n int) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			chunk := strings.Repeat("x", 1000)
			for n > 0 {
				_, _ = io.WriteString(w, chunk[:min(n, len(chunk))])
				n -= len(chunk)
				w.(http.Flusher).Flush()
			}
		}
	}

	tests := []struct {
		name    string
		server  http.HandlerFunc
		path    string
		opts    HTTPOptions
		want    string
		wantLen int
		wantErr []string
		notErr  []string
		errIs   error
	}{
		{
			name:   "posts the input with the task's headers",
			server: describe, path: "/run",
			want: `POST /run|application/json|t1|ns|3|h|{"prompt":"hi"}`,
		},
		{
			name:   "content type",
			server: describe, opts: HTTPOptions{ContentType: "text/plain"},
			want: `POST /|text/plain|t1|ns|3|h|{"prompt":"hi"}`,
		},
		{name: "any 2xx", server: status(http.StatusCreated, "made"), want: "made"},
		{name: "no content", server: status(http.StatusNoContent, ""), want: ""},
		{
			name:    "a server error quotes the status and body",
			server:  status(http.StatusInternalServerError, `{"error":"model overloaded"}`),
			wantErr: []string{`answered 500 Internal Server Error; body: {"error":"model overloaded"}`},
		},
		{
			name:    "a client error without a body",
			server:  status(http.StatusBadRequest, ""),
			wantErr: []string{"answered 400 Bad Request"},
			notErr:  []string{"body"},
		},
		{
			name:    "only the end of a long error body is quoted",
			server:  status(http.StatusBadGateway, "START"+strings.Repeat(".", 5000)+"END"),
			wantErr: []string{"502 Bad Gateway; body: …", "...END"},
			notErr:  []string{"START"},
		},
		{
			name: "redirects are followed",
			server: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/old" {
					http.Redirect(w, r, "/new", http.StatusPermanentRedirect)
					return
				}
				describe(w, r)
			},
			path: "/old",
			want: `POST /new|application/json|t1|ns|3|h|{"prompt":"hi"}`,
		},
		{name: "a result of exactly the limit", server: streamed(resultLimit), wantLen: resultLimit},
		{
			name:    "a declared length over the limit",
			server:  status(http.StatusOK, strings.Repeat("x", resultLimit+1)),
			wantErr: []string{"result too large", "answered with 262145 bytes"},
			errIs:   ErrResultTooLarge,
		},
		{
			name:    "a streamed body over the limit",
			server:  streamed(resultLimit + 1),
			wantErr: []string{"result too large", "more than the limit of 262144 bytes"},
			errIs:   ErrResultTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.server)
			defer srv.Close()
			got, err := HTTP(srv.URL+tt.path, tt.opts)(t.Context(), task)
			outcome{tt.want, tt.wantLen, tt.wantErr, tt.notErr, tt.errIs}.check(t, got, err)
		})
	}
}

func TestHTTPFailsToSend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()

	tests := []struct {
		name    string
		url     string
		wantErr string
	}{
		{name: "nothing listens", url: closed, wantErr: "posting the task to " + closed + ": dial tcp"},
		{name: "an invalid URL", url: "http://bad host/", wantErr: `building the request to the endpoint: invalid character " " in host name`},
		{name: "an unsupported scheme", url: "ftp://example.com/", wantErr: "unsupported protocol scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := HTTP(tt.url, HTTPOptions{})(t.Context(), &agent.Task{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestHTTPKeepsSecretsOutOfMessages checks that failures, which end up in the task's
// status, name the endpoint without its password or query.
func TestHTTPKeepsSecretsOutOfMessages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()

	tests := []struct {
		name, url, wantErr string
	}{
		{
			name:    "an error status",
			url:     strings.Replace(srv.URL, "http://", "http://user:secret-password@", 1) + "/run?api_key=secret-key#secret-fragment",
			wantErr: "POST http://user:xxxxx@" + strings.TrimPrefix(srv.URL, "http://") + "/run answered 403 Forbidden; body: no",
		},
		{
			name:    "a failure to connect",
			url:     "http://user:secret-password@" + closed + "/run?api_key=secret-key",
			wantErr: "posting the task to http://user:xxxxx@" + closed + "/run: dial tcp",
		},
		{
			name:    "a query that does not parse",
			url:     "http://" + closed + "/run?api_key=secret-key&x=%zz",
			wantErr: "posting the task to http://" + closed + "/run",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := HTTP(tt.url, HTTPOptions{})(t.Context(), &agent.Task{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

func TestHTTPStops(t *testing.T) {
	tests := []struct {
		name   string
		server http.HandlerFunc
		wantIs error
	}{
		{
			name: "waiting for the answer",
			server: func(_ http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			wantIs: context.DeadlineExceeded,
		},
		{
			name: "reading the body",
			server: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			wantIs: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.server)
			defer srv.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			got, err := HTTP(srv.URL, HTTPOptions{})(ctx, &agent.Task{})
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v, want one wrapping %v (result %q)", err, tt.wantIs, got)
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("returned after %s", elapsed)
			}
		})
	}
}

// TestHTTPReusesConnections checks that tasks share pooled connections, whether they
// succeed or fail, and across handlers.
func TestHTTPReusesConnections(t *testing.T) {
	var conns atomic.Int32
	var calls atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1)%2 == 0 {
			http.Error(w, "odd one out", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	first, second := HTTP(srv.URL+"/a", HTTPOptions{}), HTTP(srv.URL+"/b", HTTPOptions{})
	for i := range 6 {
		h := first
		if i%3 == 0 {
			h = second
		}
		_, _ = h(t.Context(), &agent.Task{Name: strconv.Itoa(i)})
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 6 sequential tasks, want 1", n)
	}
}

func TestHTTPUsesTheGivenClient(t *testing.T) {
	var used atomic.Bool
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used.Store(true)
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("from the client")), Request: r}, nil
	})}
	got, err := HTTP("http://agent.invalid/", HTTPOptions{Client: client})(t.Context(), &agent.Task{})
	if err != nil || got != "from the client" || !used.Load() {
		t.Errorf("got %q, %v; used the client: %v", got, err, used.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
