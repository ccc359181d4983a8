//go:build !unix

package sysmon

// Reexec does nothing where there is no exec: sysmon keeps Go's default.
func Reexec() error { return nil }
