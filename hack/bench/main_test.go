package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(t *testing.T, c *config)
	}{
		{"defaults", nil, false, func(t *testing.T, c *config) {
			if !slices.Equal(c.burstTasks, intList{1000, 10000}) || c.burstAgents != 100 || !slices.Equal(c.agentSweep, intList{10, 100, 1000}) ||
				c.stored != 100000 || c.rateDuration != 20*time.Second || !slices.Equal(c.ratePercents, intList{25, 50, 75, 100}) || c.jobs != 30 {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{"quick", []string{"-quick"}, false, func(t *testing.T, c *config) {
			if !slices.Equal(c.burstTasks, intList{500}) || c.burstAgents != 50 || !slices.Equal(c.agentSweep, intList{10, 50}) ||
				c.stored != 5000 || c.rateDuration != 5*time.Second || len(c.ratePercents) != 2 || c.jobs != 10 {
				t.Errorf("quick = %+v", c)
			}
		}},
		{"explicit flags win over quick", []string{"-quick", "-tasks=200,300", "-stored=0"}, false, func(t *testing.T, c *config) {
			if !slices.Equal(c.burstTasks, intList{200, 300}) || c.stored != 0 || c.burstAgents != 50 {
				t.Errorf("quick with flags = %+v", c)
			}
		}},
		{"bad list", []string{"-tasks=10,x"}, true, nil},
		{"negative list entry", []string{"-rates=-5"}, true, nil},
		{"zero agents", []string{"-agents=0"}, true, nil},
		{"stray argument", []string{"now"}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags(%v) error %v, want error %v", tt.args, err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestIntListString(t *testing.T) {
	l := intList{1, 20, 300}
	if got := l.String(); got != "1,20,300" {
		t.Errorf("String = %q", got)
	}
}

func TestTaskNames(t *testing.T) {
	tests := []struct {
		prefix string
		i      int
	}{{"burst-1000x100", 0}, {"rate-50", 123456}, {"warm", 7}}
	for _, tt := range tests {
		prefix, i, ok := parseTaskName(taskName(tt.prefix, tt.i))
		if !ok || prefix != tt.prefix || i != tt.i {
			t.Errorf("round trip of %s/%d = %s/%d (%v)", tt.prefix, tt.i, prefix, i, ok)
		}
	}
	for _, bad := range []string{"nodash", "-5", "run-x", "run-"} {
		if _, _, ok := parseTaskName(bad); ok {
			t.Errorf("parseTaskName(%q) accepted", bad)
		}
	}
}

func TestOutcomeOK(t *testing.T) {
	tests := []struct {
		o    Outcome
		want bool
	}{
		{Outcome{Submitted: 3, Succeeded: 3}, true},
		{Outcome{}, false},
		{Outcome{Submitted: 3, Succeeded: 2, Unfinished: 1}, false},
		{Outcome{Submitted: 3, Succeeded: 2, Missing: 1}, false},
	}
	for _, tt := range tests {
		if got := tt.o.OK(); got != tt.want {
			t.Errorf("%+v.OK() = %v", tt.o, got)
		}
	}
}

func TestParseCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: other\n"
	if got := parseCPUModel(info); got != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Errorf("parseCPUModel = %q", got)
	}
	if got := parseCPUModel(""); got != "unknown" {
		t.Errorf("parseCPUModel of nothing = %q", got)
	}
}
