package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--listen=:9000", "--namespaces=a,b", "--max-tries=5", "--shutdown-grace=3s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != ":9000" || o.namespaces != "a,b" || o.maxTries != 5 || o.shutdownGrace != 3*time.Second || o.probeAddr != ":8081" {
		t.Errorf("options %+v", o)
	}
	for args, want := range map[string]string{
		"--max-tries=0":      "--max-tries=0 must be at least 1",
		"--shutdown-grace=0": "--shutdown-grace=0s must be positive",
		"--kube-api-qps=0":   "--kube-api-qps and --kube-api-burst must be positive",
		"extra":              `unexpected arguments ["extra"]`,
		"--listen":           "parsing flags: flag needs an argument: -listen",
	} {
		if _, err := parseFlags(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--version"}, 0, "hive-gateway ", ""},
		{[]string{"--help"}, 0, "Usage: hive-gateway", ""},
		{[]string{"--max-tries=-1"}, 2, "", "hive-gateway: --max-tries=-1 must be at least 1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != tc.code || !strings.HasPrefix(stdout.String(), tc.stdout) || !strings.HasPrefix(stderr.String(), tc.stderr) {
			t.Errorf("run(%v) = %d, stdout %q, stderr %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}
