//go:build unix

package h1

import (
	"io"
	"net"
	"os"
	"syscall"
)

// alive reports whether an idle connection can still carry a request: the
// upstream has neither closed it nor sent anything unasked (a 408 before
// closing; under TLS a close_notify alert, or rarely a late session ticket,
// which costs a new connection). One non-blocking peek at the socket.
func alive(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	ok := false
	var b [1]byte
	err := raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK // nothing to read: open and quiet
		return true                                              // never wait for the socket to become readable
	})
	return err == nil && ok
}

// hungUp reports whether a client closed or reset its connection: one
// non-blocking peek, through Control, which holds the descriptor but not its
// read lock, so a read in progress on the connection neither blocks it nor
// is disturbed (the peek takes nothing out).
func hungUp(raw syscall.RawConn) bool {
	gone := false
	var b [1]byte
	err := raw.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			gone = n == 0 // an orderly close; n > 0: the client's next request
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		default:
			gone = true // reset, timed out
		}
	})
	return err == nil && gone
}

// readable reports whether a read of c would return at once: bytes are
// waiting, or the peer closed or reset the connection. Without TLS it reads
// what is there into c.pre (fill); under TLS, whose records the reader must
// decrypt, it peeks, through Control, as hungUp. The functions they run are
// made once per connection, so that neither allocates.
func (c *conn) readable() bool {
	if c.raw == nil {
		return false
	}
	if c.pre != nil {
		return c.pre.fill(c.raw)
	}
	if c.peek == nil {
		c.peek = func(fd uintptr) {
			_, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			c.ready = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
		}
	}
	c.ready = false
	return c.raw.Control(c.peek) == nil && c.ready
}

// fill takes what has arrived on raw, p's socket, without waiting for more,
// and reports whether a read would now return at once. The read goes
// through raw.Read, which holds the socket's read lock; the runtime's poller
// is not told, so a later Read that finds the socket empty waits for it as
// usual (Go always reads before it waits).
func (p *prefetch) fill(raw syscall.RawConn) bool {
	if p.pending() {
		return true
	}
	if p.read == nil {
		p.buf = make([]byte, prefetchSize)
		p.read = func(fd uintptr) bool {
			n, err := syscall.Read(int(fd), p.buf)
			switch {
			case n > 0:
				p.held = p.buf[:n]
			case err == nil:
				p.err = io.EOF
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
				// nothing yet
			default:
				p.err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
			}
			return true // never wait for the socket to become readable
		}
	}
	return raw.Read(p.read) == nil && p.pending()
}
