package h1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
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
