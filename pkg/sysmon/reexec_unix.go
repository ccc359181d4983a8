//go:build unix

package sysmon

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Reexec replaces this process with a copy of itself whose GODEBUG keeps
// sysmon awake (see the package comment), unless GODEBUG already sets
// schedtrace. It returns nil without doing anything in that case; when it
// does act it returns only if the exec fails. Call it first thing, before
// the process opens listeners or starts goroutines that matter: nothing of
// this process survives the exec but its pid, its arguments and its
// environment. Files are opened close-on-exec by Go and are closed.
func Reexec() error {
	env, changed := Env(os.Environ())
	if !changed {
		return nil
	}
	exe := "/proc/self/exe" // the running binary, even if its path was replaced since
	if runtime.GOOS != "linux" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("sysmon: find this program to start it again: %w", err)
		}
	}
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		return fmt.Errorf("sysmon: start this program again with GODEBUG=%s: %w", Setting, err)
	}
	return nil // not reached
}
