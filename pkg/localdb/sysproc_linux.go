//go:build linux

package localdb

import "syscall"

// setChildAttrs puts the child in its own process group, so a Ctrl-C in the
// terminal reaches only us (we then stop the servers in order), and asks the
// kernel to signal it if we die without stopping it, so that a killed test
// binary does not leave servers behind.
func setChildAttrs(attr *syscall.SysProcAttr, deathSig syscall.Signal) {
	attr.Setpgid = true
	attr.Pdeathsig = deathSig
}
