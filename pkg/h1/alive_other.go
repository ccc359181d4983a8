//go:build !unix

package h1

import "syscall"

// alive cannot peek at the socket here; a dead connection fails the request
// it is used for.
func alive(syscall.RawConn) bool { return true }

// hungUp cannot peek here: a client that hangs up is noticed when its
// answer is written.
func hungUp(syscall.RawConn) bool { return false }

// readable cannot peek here: each read of a stream is flushed on its own.
func (c *conn) readable() bool { return false }
