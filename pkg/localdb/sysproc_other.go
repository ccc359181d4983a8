//go:build !linux

package localdb

import "syscall"

// setChildAttrs puts the child in its own process group, so a Ctrl-C in the
// terminal reaches only us. There is no parent-death signal outside Linux.
func setChildAttrs(attr *syscall.SysProcAttr, _ syscall.Signal) {
	attr.Setpgid = true
}
