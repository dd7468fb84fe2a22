package handlers

import (
	"errors"
	"strings"
	"testing"
)

// outcome is what a handler test expects of one call.
type outcome struct {
	want    string
	wantLen int      // when > 0, the length of the result instead of want
	wantErr []string // substrings of the error; nil: no error expected
	notErr  []string // substrings the error must not hold
	errIs   error    // an error the error must wrap
}

// check compares a handler's result and error with the outcome.
func (o outcome) check(t *testing.T, got string, err error) {
	t.Helper()
	if o.wantErr == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		if o.wantLen > 0 {
			if len(got) != o.wantLen {
				t.Errorf("result of %d bytes, want %d", len(got), o.wantLen)
			}
		} else if got != o.want {
			t.Errorf("result %q, want %q", got, o.want)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error; result of %d bytes", len(got))
	}
	for _, s := range o.wantErr {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
	for _, s := range o.notErr {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
	if o.errIs != nil && !errors.Is(err, o.errIs) {
		t.Errorf("error %v does not wrap %v", err, o.errIs)
	}
}
