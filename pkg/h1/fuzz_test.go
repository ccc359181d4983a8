package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzTransportAnswer sends a request to an upstream that answers with
// arbitrary bytes and closes: the transport returns an answer or an error,
// never panics or hangs, and never keeps a connection it could not read to
// a clean end.
func FuzzTransportAnswer(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.0 500 Oops\r\n\r\nbody until close",
		"garbage",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		// An in-memory connection: thousands of TCP connections a second
		// would use up the machine's ephemeral ports.
		tr := New(2*time.Second, nil)
		tr.dialFn = func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			go func() {
				defer server.Close()
				http.ReadRequest(bufio.NewReader(server)) //nolint:errcheck // the request is well formed
				server.Write(answer)                      //nolint:errcheck // the client may be gone
			}()
			return client, nil
		}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://upstream.test/v1/x", strings.NewReader("{}"))
		res, err := tr.RoundTrip(req)
		if err != nil {
			return
		}
		if res.StatusCode < 100 || res.StatusCode > 999 {
			t.Errorf("status %d", res.StatusCode)
		}
		_, rerr := io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		tr.mu.Lock()
		kept := 0
		for _, list := range tr.idle {
			kept += len(list)
		}
		tr.mu.Unlock()
		if rerr != nil && kept > 0 {
			t.Errorf("connection kept after a failed read: %v", rerr)
		}
	})
}

// FuzzStreamOverTCP copies streamed answers, sent in pieces of any size, over
// a real keep-alive TCP connection, as a proxy does: a read, then Arrived
// before deciding to flush. What Arrived reads ahead must be handed on byte
// for byte, in order, and the connection must carry the next answer.
func FuzzStreamOverTCP(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"), uint16(7), uint8(0))
	f.Add([]byte(strings.Repeat("x", 40<<10)), uint16(1000), uint8(3))
	f.Add([]byte{}, uint16(0), uint8(1))
	var (
		mu     sync.Mutex
		answer []byte
		size   int
		pause  time.Duration
	)
	u := newUpstream(f, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a, n, p := answer, size, pause
		mu.Unlock()
		w.(http.Flusher).Flush()
		for len(a) > 0 {
			k := min(n, len(a))
			w.Write(a[:k])
			w.(http.Flusher).Flush()
			a = a[k:]
			time.Sleep(p)
		}
	}, false)
	tr := transportFor(u)
	f.Cleanup(tr.CloseIdleConnections)
	f.Fuzz(func(t *testing.T, stream []byte, piece uint16, gap uint8) {
		mu.Lock()
		// At most 256 pieces, each flushed, with up to 150 µs between them.
		answer, size, pause = stream, max(1+int(piece)%(64<<10), len(stream)/256+1), time.Duration(gap%4)*50*time.Microsecond
		mu.Unlock()
		res := mustPost(t, tr, u)
		defer res.Body.Close()
		arrived := res.Body.(interface{ Arrived() bool }).Arrived
		var got []byte
		buf := make([]byte, 1+int(piece)%5000)
		for {
			n, err := res.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d of %d bytes: %v", len(got), len(stream), err)
			}
			arrived()
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("got %d bytes, want %d; first difference at %d", len(got), len(stream), firstDifference(got, stream))
		}
		if n := u.conns.Load(); n != 1 {
			t.Fatalf("%d connections, want 1: an answer read to its end leaves it to the next", n)
		}
	})
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
