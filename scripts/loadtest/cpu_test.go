package main

import (
	"os"
	"testing"
)

// procIO counts this process's read and write system calls: 50 writes and
// 50 reads on a pipe show up as at least 50 more of each.
func TestProcIOCountsReadsAndWrites(t *testing.T) {
	before, ok := procIO("self")
	if !ok {
		t.Fatal("/proc/self/io not readable")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	buf := make([]byte, 1)
	for range 50 {
		if _, err := w.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := procIO("self")
	got := callCounts{"p": after}.sub(callCounts{"p": before})["p"]
	if got[0] < 50 || got[1] < 50 {
		t.Errorf("%d reads and %d writes counted, want 50 or more of each", got[0], got[1])
	}
	if got[0] > 1000 || got[1] > 1000 {
		t.Errorf("%d reads and %d writes counted for 50 of each", got[0], got[1])
	}
}

func TestProcIOOfAProcessThatIsGone(t *testing.T) {
	if _, ok := procIO("0"); ok {
		t.Error("procIO of pid 0 succeeded")
	}
}
