package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// rawClient is the load generator's lean HTTP/1.1 client (-client raw).
//
// The generator shares the machine's two CPUs with what it measures, so
// every microsecond it spends is taken from the edge, the mock and NATS, and
// shows up in their latency. net/http's client spends about 200 µs of CPU per
// request here: a goroutine per request whose stack grows through the
// Transport, a context with a deadline, three goroutines handing each request
// on, and the request built and written header by header. This client sends
// each request as bytes built once, written by the pacer itself onto an idle
// keep-alive connection, and one long-lived goroutine per connection reads
// the answer. Per request that is one write and one wake-up, as a client on
// another machine would cost the edge nothing at all.
//
// It reads what the load test's targets send: a status line, headers, and a
// body framed by Content-Length or chunked encoding. Anything else is an
// error for the sample and closes the connection.
type rawClient struct {
	addr string
	reqs [2][]byte // the request, plain and streamed, as sent

	mu   sync.Mutex
	idle []*rawConn // LIFO, so that few connections stay warm
	all  map[*rawConn]struct{}
}

// rawConn is one keep-alive connection.
type rawConn struct {
	cl *rawClient
	c  net.Conn
	br *bufio.Reader
	// pending carries the request just written to the connection's reader
	// goroutine (open loop only). send puts it there before writing, so the
	// reader always finds it once the answer's first byte has arrived.
	pending chan rawPending
	idleAt  int // index in cl.idle, -1 while in use
	tail    [128]byte
}

type rawPending struct {
	streamed  bool
	scheduled time.Time
	late      time.Duration
	done      func(sample)
}

// newRawClient builds the two requests for base (http://host:port) from the
// same body and headers net/http's client sends.
func newRawClient(base string, bodies map[bool][]byte, headers func(streamed bool) [][2]string) (*rawClient, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("raw client: %q is not http://host:port", base)
	}
	cl := &rawClient{addr: u.Host, all: map[*rawConn]struct{}{}}
	for i, streamed := range []bool{false, true} {
		var b bytes.Buffer
		fmt.Fprintf(&b, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n", u.Host)
		for _, h := range headers(streamed) {
			fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(bodies[streamed]))
		b.Write(bodies[streamed])
		cl.reqs[i] = b.Bytes()
	}
	return cl, nil
}

func (cl *rawClient) dial() (*rawConn, error) {
	c, err := net.DialTimeout("tcp", cl.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{cl: cl, c: c, br: bufio.NewReaderSize(c, 16<<10), pending: make(chan rawPending, 1), idleAt: -1}
	cl.mu.Lock()
	cl.all[rc] = struct{}{}
	cl.mu.Unlock()
	return rc, nil
}

// send writes one request on an idle connection (dialling one if none is
// idle) and returns; done gets the sample from the connection's reader when
// the answer has been read, or the error.
func (cl *rawClient) send(streamed bool, scheduled time.Time, done func(sample)) {
	cl.mu.Lock()
	var rc *rawConn
	if n := len(cl.idle); n > 0 {
		rc = cl.idle[n-1]
		cl.idle = cl.idle[:n-1]
		rc.idleAt = -1
	}
	cl.mu.Unlock()
	if rc == nil {
		var err error
		if rc, err = cl.dial(); err != nil {
			done(sample{late: time.Since(scheduled), total: time.Since(scheduled), err: err})
			return
		}
		go rc.readLoop()
	}
	late := time.Since(scheduled)
	rc.pending <- rawPending{streamed: streamed, scheduled: scheduled, late: late, done: done}
	if _, err := rc.c.Write(cl.reqs[b2i(streamed)]); err != nil {
		rc.c.Close() // the reader fails its read and reports the request
	}
}

// readLoop reads the answer to each request send writes, and waits on an
// idle connection for the next.
func (rc *rawConn) readLoop() {
	cl := rc.cl
	for {
		_, err := rc.br.Peek(1) // the answer's first byte, or an idle connection's end
		var p rawPending
		select {
		case p = <-rc.pending:
		default:
			// Nothing was sent: the server closed an idle connection or
			// sent bytes unasked. Unless send has just taken it (and its
			// request is on the way), take it out of the pool.
			cl.mu.Lock()
			idle := rc.idleAt >= 0
			if idle {
				cl.removeIdleLocked(rc)
			}
			cl.mu.Unlock()
			if idle {
				rc.close()
				return
			}
			p = <-rc.pending
			if err == nil {
				err = errors.New("bytes before the request was sent")
			}
		}
		var s sample
		var closing bool
		if err != nil {
			s = sample{total: time.Since(p.scheduled), err: err}
		} else {
			s, closing = rc.answer(p.streamed, p.scheduled)
		}
		s.late = p.late
		if s.err != nil || closing {
			rc.close()
			p.done(s)
			return
		}
		cl.mu.Lock()
		rc.idleAt = len(cl.idle)
		cl.idle = append(cl.idle, rc)
		cl.mu.Unlock()
		p.done(s)
	}
}

// close closes the connection and forgets it.
func (rc *rawConn) close() {
	rc.cl.mu.Lock()
	delete(rc.cl.all, rc)
	rc.cl.mu.Unlock()
	rc.c.Close()
}

func (cl *rawClient) removeIdleLocked(rc *rawConn) {
	i := rc.idleAt
	last := len(cl.idle) - 1
	cl.idle[i] = cl.idle[last]
	cl.idle[i].idleAt = i
	cl.idle = cl.idle[:last]
	rc.idleAt = -1
}

// closeAll closes every connection: requests still out fail, which ends an
// open-loop step whose answers do not come.
func (cl *rawClient) closeAll() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for rc := range cl.all {
		rc.c.Close()
	}
}

// roundTrip writes one request on rc and reads its answer, for the closed
// loop's workers (which own their connections; no reader goroutine). ok is
// whether rc can carry the next request; if not, it is closed.
func (rc *rawConn) roundTrip(streamed bool, scheduled time.Time) (s sample, ok bool) {
	if _, err := rc.c.Write(rc.cl.reqs[b2i(streamed)]); err != nil {
		rc.close()
		return sample{total: time.Since(scheduled), err: err}, false
	}
	s, closing := rc.answer(streamed, scheduled)
	if s.err != nil || closing {
		rc.close()
		return s, false
	}
	return s, true
}

// answer reads one answer into a sample (readAnswer), its error included;
// the total is the time to the last byte read, whatever ended the answer.
func (rc *rawConn) answer(streamed bool, scheduled time.Time) (s sample, closing bool) {
	s, closing, err := rc.readAnswer(streamed, scheduled)
	if err != nil {
		s.err, s.total = err, time.Since(scheduled)
	}
	return s, closing
}

var errBadAnswer = errors.New("malformed HTTP answer")

// readAnswer reads one answer: it must be a 200 with a non-empty body, and a
// stream must end with "data: [DONE]". closing is whether the server said it
// closes the connection after it.
func (rc *rawConn) readAnswer(streamed bool, scheduled time.Time) (s sample, closing bool, err error) {
	line, err := rc.br.ReadSlice('\n')
	if err != nil {
		return s, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) { // the targets all speak 1.1 (1.0 would frame bodies otherwise)
		return s, false, fmt.Errorf("%w: status line %.40q", errBadAnswer, line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return s, false, fmt.Errorf("%w: status line %.40q", errBadAnswer, line)
	}
	length, chunked := int64(-1), false
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return s, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return s, false, fmt.Errorf("%w: header line %.40q", errBadAnswer, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return s, false, fmt.Errorf("%w: Content-Length %.40q", errBadAnswer, value)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			if chunked = asciiEqualFold(value, "chunked"); !chunked {
				return s, false, fmt.Errorf("%w: Transfer-Encoding %.40q", errBadAnswer, value)
			}
		case asciiEqualFold(name, "Connection"):
			closing = asciiEqualFold(value, "close")
		}
	}
	tail := rc.tail[:0]
	var read int64
	switch {
	case chunked:
		read, err = rc.readChunked(&s, scheduled, &tail)
	case length >= 0:
		if length > 0 {
			if _, err = rc.br.Peek(1); err == nil {
				s.firstByte = time.Since(scheduled)
			}
		}
		if err == nil {
			read, err = rc.readBody(length, &tail)
		}
	default:
		return s, false, fmt.Errorf("%w: neither Content-Length nor chunked", errBadAnswer)
	}
	s.total, s.size = time.Since(scheduled), read
	switch {
	case err != nil:
	case status != 200:
		err = fmt.Errorf("status %d", status)
	case read == 0:
		err = errors.New("empty answer")
	case streamed && !bytes.HasSuffix(tail, []byte("data: [DONE]\n\n")):
		err = errors.New("stream did not end with [DONE]")
	}
	return s, closing, err
}

// readChunked reads a chunked body to its end, keeping its last bytes.
func (rc *rawConn) readChunked(s *sample, scheduled time.Time, tail *[]byte) (read int64, err error) {
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return read, err
		}
		hex, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(hex)), 16, 64)
		if err != nil || size < 0 {
			return read, fmt.Errorf("%w: chunk size %.40q", errBadAnswer, line)
		}
		if size == 0 {
			for { // trailers, then the empty line
				line, err := rc.br.ReadSlice('\n')
				if err != nil {
					return read, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return read, nil
				}
			}
		}
		n, err := rc.readBody(size, tail)
		if read == 0 {
			s.firstByte = time.Since(scheduled)
		}
		read += n
		if err != nil {
			return read, err
		}
		if crlf, err := rc.br.ReadSlice('\n'); err != nil || string(crlf) != "\r\n" {
			return read, fmt.Errorf("%w: no CRLF after a chunk", errBadAnswer)
		}
	}
}

// readBody reads n bytes of body, keeping the last 64 in tail (whose
// capacity is 128: it never grows).
func (rc *rawConn) readBody(n int64, tail *[]byte) (int64, error) {
	var read int64
	for read < n {
		p, err := rc.br.Peek(int(min(n-read, int64(rc.br.Size()))))
		t := append(*tail, p[max(0, len(p)-64):]...)
		if len(t) > 64 {
			t = append(t[:0], t[len(t)-64:]...)
		}
		*tail = t
		rc.br.Discard(len(p)) //nolint:errcheck // p is buffered
		read += int64(len(p))
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return read, err
		}
	}
	return read, nil
}

// asciiEqualFold is an ASCII-only bytes.EqualFold, as net/http compares
// header names and tokens: Unicode folding would take "chun\u212aed" (a
// Kelvin sign) for chunked, where net/http does not.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
