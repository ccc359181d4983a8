package sysmon

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"A=1", "B=2"}, []string{"A=1", "B=2", "GODEBUG=" + Setting}, true},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"A=1", "GODEBUG=" + Setting}, true},
		{"other settings kept", []string{"GODEBUG=madvdontneed=1,gctrace=1"}, []string{"GODEBUG=madvdontneed=1,gctrace=1," + Setting}, true},
		{"the first GODEBUG is the one read", []string{"GODEBUG=gctrace=1", "X=y", "GODEBUG=schedtrace=5"}, []string{"X=y", "GODEBUG=gctrace=1," + Setting}, true},
		{"schedtrace set: the operator's choice", []string{"GODEBUG=schedtrace=1000"}, []string{"GODEBUG=schedtrace=1000"}, false},
		{"schedtrace=0 turns it off", []string{"A=1", "GODEBUG=gctrace=1,schedtrace=0"}, []string{"A=1", "GODEBUG=gctrace=1,schedtrace=0"}, false},
		{"the runtime reads no spaces", []string{"GODEBUG=gctrace=1, schedtrace=0"}, []string{"GODEBUG=gctrace=1, schedtrace=0," + Setting}, true},
		{"a longer name is not schedtrace", []string{"GODEBUG=schedtracex=1"}, []string{"GODEBUG=schedtracex=1," + Setting}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			got, changed := Env(in)
			if !slices.Equal(got, tc.want) || changed != tc.changed {
				t.Errorf("Env(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
			}
			if !slices.Equal(in, tc.env) {
				t.Errorf("Env changed its argument: %q", in)
			}
		})
	}
}

func TestStrip(t *testing.T) {
	for _, tc := range []struct{ env, want []string }{
		{[]string{"A=1", "GODEBUG=" + Setting}, []string{"A=1"}},
		{[]string{"GODEBUG=gctrace=1," + Setting, "B=2"}, []string{"GODEBUG=gctrace=1", "B=2"}},
		{[]string{"GODEBUG=schedtrace=1000"}, []string{"GODEBUG=schedtrace=1000"}}, // not ours
		{[]string{"A=1"}, []string{"A=1"}},
	} {
		if got := Strip(slices.Clone(tc.env)); !slices.Equal(got, tc.want) {
			t.Errorf("Strip(%q) = %q, want %q", tc.env, got, tc.want)
		}
		// Env then Strip gives back what there was (GODEBUG moves last).
		if slices.Contains(tc.want, "GODEBUG=schedtrace=1000") {
			continue // Env adds nothing there
		}
		added, _ := Env(tc.want)
		got, want := Strip(added), slices.Clone(tc.want)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Strip(Env(%q)) = %q", tc.want, got)
		}
	}
}

// TestReexec starts this test binary as a child that calls Reexec: the
// child must come back as the same process (same pid) with the setting in
// GODEBUG, the other settings and its arguments kept, and not exec a second
// time.
func TestReexec(t *testing.T) {
	if os.Getenv("SYSMON_TEST_CHILD") != "" {
		fmt.Printf("start pid=%d awake=%v\n", os.Getpid(), Awake(os.Getenv("GODEBUG")))
		if err := Reexec(); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("running pid=%d awake=%v args=%q godebug=%q\n", os.Getpid(), Awake(os.Getenv("GODEBUG")), os.Args[1:], os.Getenv("GODEBUG"))
		os.Exit(0)
	}
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no exec here: Reexec does nothing")
	}
	run := func(godebug string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestReexec$", "-test.v=false")
		cmd.Env = append(os.Environ(), "SYSMON_TEST_CHILD=1", "GODEBUG="+godebug)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}

	out := run("madvdontneed=1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want two starts (before and after the exec) and one run, got:\n%s", out)
	}
	var pid1, pid2, pid3 int
	var awake1, awake2 bool
	fmt.Sscanf(lines[0], "start pid=%d awake=%t", &pid1, &awake1)
	fmt.Sscanf(lines[1], "start pid=%d awake=%t", &pid2, &awake2)
	fmt.Sscanf(lines[2], "running pid=%d", &pid3)
	if pid1 == 0 || pid1 != pid2 || pid2 != pid3 || awake1 || !awake2 {
		t.Errorf("want the same process, asleep then awake; got:\n%s", out)
	}
	wantRun := fmt.Sprintf("running pid=%d awake=true args=%q godebug=%q", pid1,
		[]string{"-test.run=^TestReexec$", "-test.v=false"}, "madvdontneed=1,"+Setting)
	if lines[2] != wantRun {
		t.Errorf("after the exec:\n got %s\nwant %s", lines[2], wantRun)
	}

	// The operator turned it off: no exec.
	out = run("schedtrace=0")
	if n := strings.Count(out, "start "); n != 1 || !strings.Contains(out, `godebug="schedtrace=0"`) {
		t.Errorf("with schedtrace=0 the child must not exec; got:\n%s", out)
	}
}

func TestAwake(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                          false,
		"gctrace=1":                 false,
		Setting:                     true,
		"schedtrace=0":              false,
		"schedtrace=1000,gctrace=1": true,
		"schedtrace=5,schedtrace=0": false, // the last one wins
		"schedtrace=x":              false,
	} {
		if got := Awake(godebug); got != want {
			t.Errorf("GODEBUG=%q: Awake() = %v, want %v", godebug, got, want)
		}
		if got, want := Decided(godebug), strings.Contains(godebug, "schedtrace"); got != want {
			t.Errorf("GODEBUG=%q: Decided() = %v, want %v", godebug, got, want)
		}
	}
}
