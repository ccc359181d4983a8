package h1

import "net"

// prefetchSize is the most that one look at the socket (readable) takes out
// of it ahead of the reader.
const prefetchSize = 8 << 10

// prefetch sits between a plain TCP connection and its bufio.Reader. When a
// proxy copying a stream asks whether more has arrived (body.Arrived), the
// answer is found by reading: one non-blocking read, whose bytes are kept
// here and handed to the next Read without another system call. A peek would
// cost the same system call and leave the bytes to be read by a second one;
// a streamed answer asks once per read it copies, several times per answer.
type prefetch struct {
	nc   net.Conn
	buf  []byte // made on first use: most connections never stream
	held []byte // in buf: taken from the socket and not yet handed on
	err  error  // what the socket said after held: io.EOF or a reset; it stays

	read func(fd uintptr) bool // the non-blocking read, made once (alive_unix.go)
}

func (p *prefetch) Read(b []byte) (int, error) {
	if len(p.held) > 0 {
		n := copy(b, p.held)
		p.held = p.held[n:]
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.nc.Read(b)
}

// pending reports whether the socket's bytes, or its end, are held here.
func (p *prefetch) pending() bool { return len(p.held) > 0 || p.err != nil }
