package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// writeRecorder records each Write it gets.
type writeRecorder struct {
	writes []int
	all    bytes.Buffer
	fail   error
}

func (r *writeRecorder) Write(p []byte) (int, error) {
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, len(p))
	return r.all.Write(p)
}

func TestWriteBuffer(t *testing.T) {
	piece := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	for _, tc := range []struct {
		name   string
		pieces []int // sizes written before the Flush
		writes []int // the writes the connection gets
	}{
		{"small pieces: one write at Flush", []int{100, 200, 300}, []int{600}},
		{"exactly the small buffer", []int{smallWrite}, []int{smallWrite}},
		{"past the small buffer: grows, one write at Flush", []int{300, smallWrite, 1000}, []int{5396}},
		{"up to the grown buffer", []int{bigWrite - 10, 10}, []int{bigWrite}},
		// Past the grown buffer: what is held and the piece go out together
		// (net.Buffers; one writev on a TCP connection, a write of each
		// here), and the buffer goes on from empty.
		{"past the grown buffer", []int{1000, bigWrite}, []int{1000, bigWrite}},
		{"past it, then more", []int{1000, bigWrite, 50}, []int{1000, bigWrite, 50}},
		{"one piece larger than the grown buffer", []int{bigWrite + 1}, []int{bigWrite + 1}},
		{"nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec writeRecorder
			b := newWriteBuffer(&rec)
			defer b.release()
			var want bytes.Buffer
			for i, n := range tc.pieces {
				p := piece(n, byte('a'+i))
				want.Write(p)
				if m, err := b.Write(p); m != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
				}
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rec.writes, tc.writes) {
				t.Errorf("writes %v, want %v", rec.writes, tc.writes)
			}
			if !bytes.Equal(rec.all.Bytes(), want.Bytes()) {
				t.Errorf("the connection got %d bytes that differ from the %d written", rec.all.Len(), want.Len())
			}
			if cap(b.buf) != smallWrite || b.big != nil {
				t.Errorf("after Flush the buffer holds %d bytes of capacity, want the small %d", cap(b.buf), smallWrite)
			}
		})
	}
}

func TestWriteBufferStringsAndBytes(t *testing.T) {
	var rec writeRecorder
	b := newWriteBuffer(&rec)
	defer b.release()
	long := strings.Repeat("x", bigWrite+5)
	b.WriteString("HTTP/1.1 200 OK\r\n")
	b.Write(strconv.AppendInt(b.AvailableBuffer(), 42, 10))
	b.WriteByte('\n')
	b.WriteString(long) // more than even the grown buffer: goes out with what is held (a writev on TCP)
	b.WriteString(strings.Repeat("y", smallWrite+1))
	for range 3 {
		b.WriteByte('z')
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 OK\r\n42\n" + long + strings.Repeat("y", smallWrite+1) + "zzz"
	if rec.all.String() != want {
		t.Fatalf("the connection got %d bytes that differ from the %d written", rec.all.Len(), len(want))
	}
	if writes := []int{20, bigWrite + 5, smallWrite + 4}; !slices.Equal(rec.writes, writes) {
		t.Errorf("writes %v, want %v", rec.writes, writes)
	}
}

func TestWriteBufferKeepsTheFirstError(t *testing.T) {
	broken := errors.New("connection reset")
	rec := &writeRecorder{fail: broken}
	b := newWriteBuffer(rec)
	defer b.release()
	b.Write([]byte("held"))
	if err := b.Flush(); !errors.Is(err, broken) {
		t.Fatalf("Flush = %v, want %v", err, broken)
	}
	rec.fail = nil
	if _, err := b.Write([]byte("more")); !errors.Is(err, broken) {
		t.Errorf("Write after a failed write = %v, want the failure", err)
	}
	if _, err := b.WriteString("more"); !errors.Is(err, broken) {
		t.Errorf("WriteString after a failed write = %v, want the failure", err)
	}
	if err := b.WriteByte('x'); !errors.Is(err, broken) {
		t.Errorf("WriteByte after a failed write = %v, want the failure", err)
	}
	if err := b.Flush(); !errors.Is(err, broken) || len(rec.writes) != 0 {
		t.Errorf("Flush after a failed write = %v and %d writes, want the failure and none", err, len(rec.writes))
	}
}

// Over a real TCP connection a write past the grown buffer goes out as one
// writev of what is held and the write; what arrives is what was written.
func TestWriteBufferOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		all, _ := io.ReadAll(c)
		got <- all
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := newWriteBuffer(nc)
	var want bytes.Buffer
	for i, n := range []int{200, smallWrite, 3 * bigWrite, 10, bigWrite} {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		want.Write(p)
		if _, err := b.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.release()
	nc.Close()
	if all := <-got; !bytes.Equal(all, want.Bytes()) {
		t.Fatalf("received %d bytes that differ from the %d written", len(all), want.Len())
	}
}

// countingListener counts the writes to the connections it accepts.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

// countingConn hides the TCP connection's writev: every write is counted
// as one, as it would be as a system call.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// An answer longer than the connection's 4 KB buffer goes out in one write
// when the handler returns, and a stream's flush of more than 4 KB in one
// write per flush, the last one with the stream's end.
func TestServerAnswerOfMoreThan4KBIsOneWrite(t *testing.T) {
	t.Parallel()
	piece := strings.Repeat("0123456789", 100) // 1,000 bytes
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		for i := range 12 {
			io.WriteString(w, piece)
			if r.URL.Path == "/stream" && i == 5 {
				w.(http.Flusher).Flush()
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	ts := serveOn(t, s, countingListener{ln, &writes})
	c := dialRaw(t, ts.addr)
	want := strings.Repeat(piece, 12)
	for _, tc := range []struct {
		path   string
		writes int64
	}{
		{"/plain", 1},  // 12,000 bytes and the header: held until the handler returns
		{"/stream", 2}, // the first six pieces at the flush, the rest with the end
		{"/plain", 1},  // the grown buffer was given back and is taken again
	} {
		before := writes.Load()
		c.send(get(tc.path))
		res := c.want200("GET", want)
		if got := writes.Load() - before; got != tc.writes {
			t.Errorf("GET %s: %d writes, want %d", tc.path, got, tc.writes)
		}
		if chunked := len(res.TransferEncoding) > 0; chunked != (tc.path == "/stream") {
			t.Errorf("GET %s: chunked %v", tc.path, chunked)
		}
	}
}

// ReadFrom, as http.Request.Write copies a body after its header: up to the
// grown buffer in one write at Flush, more a full buffer at a time.
func TestWriteBufferReadFrom(t *testing.T) {
	for _, tc := range []struct {
		body   int
		writes []int
	}{
		{0, []int{300}},
		{3000, []int{3300}},
		{20000, []int{20300}},
		{bigWrite - 300, []int{bigWrite}},
		{100000, []int{bigWrite, bigWrite, bigWrite, 100300 - 3*bigWrite}},
	} {
		var rec writeRecorder
		b := newWriteBuffer(&rec)
		header := strings.Repeat("h", 300)
		body := strings.Repeat("b", tc.body)
		b.WriteString(header)
		// LimitReader, as net/http wraps a body of known length: no WriteTo.
		n, err := b.ReadFrom(io.LimitReader(iotest.HalfReader(strings.NewReader(body)), int64(tc.body)))
		if n != int64(tc.body) || err != nil {
			t.Fatalf("body of %d: ReadFrom = %d, %v", tc.body, n, err)
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		if rec.all.String() != header+body {
			t.Errorf("body of %d: the connection got %d bytes that differ from the %d written", tc.body, rec.all.Len(), len(header+body))
		}
		if !slices.Equal(rec.writes, tc.writes) {
			t.Errorf("body of %d: writes %v, want %v", tc.body, rec.writes, tc.writes)
		}
		b.release()
	}
}

// The Transport writes a request of up to 32 KB, header and body, in one
// write, as it reads it from the request.
func TestTransportWritesARequestInOneWrite(t *testing.T) {
	u := newUpstream(t, echo, false)
	tr := transportFor(u)
	var writes atomic.Int64
	tr.dialFn = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &writes}, nil
	}
	for _, tc := range []struct {
		body   int
		writes int64
	}{{100, 1}, {20 << 10, 1}, {100 << 10, 4}} {
		body := strings.Repeat("x", tc.body)
		before := writes.Load()
		res, err := post(t, tr, context.Background(), u.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); got != "POST "+body {
			t.Fatalf("body of %d: the upstream got %d bytes, want %d", tc.body, len(got)-5, tc.body)
		}
		if got := writes.Load() - before; got != tc.writes {
			t.Errorf("body of %d: %d writes, want %d", tc.body, got, tc.writes)
		}
	}
}
