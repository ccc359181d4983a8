//go:build !unix

package h1

import "syscall"

// alive cannot peek at the socket here; a dead connection fails the request
// it is used for.
func alive(syscall.Conn) bool { return true }

// hungUp cannot peek here: a client that hangs up is noticed when its
// answer is written.
func hungUp(syscall.RawConn) bool { return false }
