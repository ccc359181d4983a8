package h1

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testServer is a Server serving on a fresh port of 127.0.0.1.
type testServer struct {
	*Server
	addr string
	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned, once done is closed
}

// startServer serves s until the test ends (Close), with a log that
// discards unless s has one.
func startServer(tb testing.TB, s *Server) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serveOn(tb, s, ln)
}

// serveOn serves s on ln until the test ends, as startServer.
func serveOn(tb testing.TB, s *Server, ln net.Listener) *testServer {
	tb.Helper()
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		ts.err = s.Serve(ln)
		close(ts.done)
	}()
	tb.Cleanup(func() {
		s.Close()
		ln.Close() // in case Close came before Serve took the listener
		select {
		case <-ts.done:
		case <-time.After(5 * time.Second):
			tb.Error("Serve did not return after Close")
		}
	})
	return ts
}

// rawConn is a client connection that writes exact bytes and reads answers
// with http.ReadResponse; raw records every byte read.
type rawConn struct {
	t *testing.T
	net.Conn
	br  *bufio.Reader
	raw bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c := &rawConn{t: t, Conn: nc}
	c.br = bufio.NewReader(io.TeeReader(nc, &c.raw))
	return c
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// readErr reads one answer (to a request with this method) and its body.
func (c *rawConn) readErr(method string) (*http.Response, string, error) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("no answer: %v (read so far %q)", err, c.raw.String())
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

// read reads one answer and its body, which must be complete.
func (c *rawConn) read(method string) (*http.Response, string) {
	c.t.Helper()
	res, body, err := c.readErr(method)
	if err != nil {
		c.t.Fatalf("answer's body: %v (got %q)", err, body)
	}
	return res, body
}

// expectClosed checks that the server closes the connection within d and
// sends nothing more.
// want200 reads an answer and fails the test unless it is 200 with body.
func (c *rawConn) want200(method, body string) *http.Response {
	c.t.Helper()
	res, got := c.read(method)
	if res.StatusCode != 200 || got != body {
		c.t.Fatalf("answer %d %q, want 200 %q (read %q)", res.StatusCode, got, body, c.raw.String())
	}
	return res
}

func (c *rawConn) expectClosed(d time.Duration) {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	var ne net.Error
	switch {
	case err == nil:
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("got %q, want the connection closed", append([]byte{b}, rest...))
	case errors.As(err, &ne) && ne.Timeout():
		c.t.Fatalf("connection still open after %v, want it closed", d)
	case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
		c.t.Fatalf("read: %v, want the connection closed", err)
	}
}

// get is a minimal HTTP/1.1 GET.
func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n" }

// srvEcho answers "METHOD PATH BODY".
func srvEcho(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
}

// within waits for ch, or fails the test after d.
func within(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

func TestServerKeepAlive(t *testing.T) {
	t.Parallel()
	ts := startServer(t, &Server{Handler: http.HandlerFunc(srvEcho)})
	t.Run("sequential", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		for i := range 3 {
			c.send(get(fmt.Sprintf("/%d", i)))
			res, body := c.read("GET")
			if want := fmt.Sprintf("GET /%d ", i); res.StatusCode != 200 || body != want || res.Close {
				t.Fatalf("answer %d: %d %q close=%v, want 200 %q kept open", i, res.StatusCode, body, res.Close, want)
			}
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send(get("/a") +
			"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
			"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n" +
			get("/d"))
		for _, want := range []string{"GET /a ", "POST /b hello", "POST /c xyz", "GET /d "} {
			c.want200("GET", want)
		}
	})
}

func TestServerFraming(t *testing.T) {
	t.Parallel()
	const big = 100_000 // beyond the 64 KiB held back
	bigBody := func() []byte {
		var b bytes.Buffer
		for i := 0; b.Len() < big; i++ {
			fmt.Fprintf(&b, "%09d\n", i)
		}
		return b.Bytes()[:big]
	}()
	writeBig := func(w http.ResponseWriter) {
		for p := bigBody; len(p) > 0; p = p[min(len(p), 1000):] {
			w.Write(p[:min(len(p), 1000)])
		}
	}
	handlerErr := make(chan error, 1)
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		request string // raw; GET / over HTTP/1.1 if empty
		method  string
		status  int
		proto   string            // the answer's protocol, HTTP/1.1 if empty
		header  map[string]string // exact values; "" must be absent
		chunked bool
		body    string
		bodyErr error  // reading the body must fail so
		next    string // a request that must be answered "next" on the same connection; "" for a closed connection
		wantErr error  // what the handler's Write returned (sent on handlerErr)
	}{{
		name:    "small body gets Content-Length",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
		header:  map[string]string{"Content-Length": "5", "Content-Type": "text/plain; charset=utf-8"},
		body:    "hello",
		next:    get("/next"),
	}, {
		name: "flush makes it chunked",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "first,")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			io.WriteString(w, "second")
		},
		header:  map[string]string{"Content-Length": ""},
		chunked: true,
		body:    "first,second",
		next:    get("/next"),
	}, {
		name:    "over 64 KiB without flush is chunked",
		handler: func(w http.ResponseWriter, r *http.Request) { writeBig(w) },
		header:  map[string]string{"Content-Length": ""},
		chunked: true,
		body:    string(bigBody),
		next:    get("/next"),
	}, {
		name: "handler's Content-Length is kept",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(big))
			writeBig(w)
		},
		header: map[string]string{"Content-Length": fmt.Sprint(big)},
		body:   string(bigBody),
		next:   get("/next"),
	}, {
		name: "writing beyond Content-Length fails",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
			_, err := io.WriteString(w, "d")
			handlerErr <- err
		},
		header:  map[string]string{"Content-Length": "3"},
		body:    "abc",
		next:    get("/next"),
		wantErr: http.ErrContentLength,
	}, {
		name: "writing less than Content-Length closes",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "short")
		},
		header:  map[string]string{"Content-Length": "10"},
		body:    "short",
		bodyErr: io.ErrUnexpectedEOF,
	}, {
		name: "204 has no body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "x")
			handlerErr <- err
		},
		status:  http.StatusNoContent,
		header:  map[string]string{"Content-Length": ""},
		next:    get("/next"),
		wantErr: http.ErrBodyNotAllowed,
	}, {
		name: "304 has no body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
			_, err := io.WriteString(w, "x")
			handlerErr <- err
		},
		status:  http.StatusNotModified,
		header:  map[string]string{"Content-Length": "", "Etag": `"v1"`},
		next:    get("/next"),
		wantErr: http.ErrBodyNotAllowed,
	}, {
		name:    "HEAD gets the length but no body",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
		request: "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
		method:  "HEAD",
		header:  map[string]string{"Content-Length": "5"},
		next:    get("/next"),
	}, {
		// net/http sends neither Transfer-Encoding nor a body to HEAD.
		name: "HEAD after a flush has no body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
			http.NewResponseController(w).Flush()
		},
		request: "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
		method:  "HEAD",
		header:  map[string]string{"Content-Length": ""},
		next:    get("/next"),
	}, {
		name:    "HTTP/1.0 closes",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
		request: "GET / HTTP/1.0\r\n\r\n",
		proto:   "HTTP/1.0",
		header:  map[string]string{"Connection": "close", "Content-Length": "5"},
		body:    "hello",
	}, {
		// HTTP/1.0 keep-alive is refused (net/http keeps it): see the
		// smuggling cases below.
		name:    "HTTP/1.0 keep-alive with a known length closes",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
		request: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		proto:   "HTTP/1.0",
		header:  map[string]string{"Connection": "close", "Content-Length": "5"},
		body:    "hello",
	}, {
		// As below, without Content-Length: the body is read as empty.
		name:    "HTTP/1.0 keep-alive with chunks and no length closes",
		handler: echoBody,
		request: "POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"23\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\n\r\n",
		proto:  "HTTP/1.0",
		header: map[string]string{"Connection": "close", "Content-Length": "0"},
	}, {
		name: "HTTP/1.0 keep-alive with an unknown length closes",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
			http.NewResponseController(w).Flush()
			io.WriteString(w, " world")
		},
		request: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		proto:   "HTTP/1.0",
		header:  map[string]string{"Connection": "close", "Content-Length": ""},
		body:    "hello world",
	}, {
		// http.ReadRequest drops Transfer-Encoding from HTTP/1.0 and frames
		// the body by Content-Length; a proxy in front that went by the
		// chunks would send "GET /smuggled" as a request of its own.
		name:    "HTTP/1.0 keep-alive with a body closes",
		handler: echoBody,
		request: "POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"23\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\n\r\n",
		proto:  "HTTP/1.0",
		header: map[string]string{"Connection": "close", "Content-Length": "4"},
		body:   "23\r\n",
	}, {
		// RFC 9110 8.6: no Content-Length in a 1xx answer (net/http leaves
		// it out); the final answer keeps it.
		name: "early hints carry no framing headers",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "hello")
		},
		header: map[string]string{"Content-Length": "5", "Link": "</a.css>; rel=preload"},
		body:   "hello",
		next:   get("/next"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				tc.handler(w, r)
			})})
			c := dialRaw(t, ts.addr)
			c.send(cmp.Or(tc.request, get("/")))
			method := cmp.Or(tc.method, "GET")
			res, err := http.ReadResponse(c.br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("no answer: %v (read %q)", err, c.raw.String())
			}
			for res.StatusCode == http.StatusEarlyHints {
				for _, k := range []string{"Content-Length", "Transfer-Encoding"} {
					if v, ok := res.Header[k]; ok {
						t.Errorf("103 answer has %s: %q, want none", k, v)
					}
				}
				if res, err = http.ReadResponse(c.br, &http.Request{Method: method}); err != nil {
					t.Fatalf("no final answer: %v (read %q)", err, c.raw.String())
				}
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if !errors.Is(err, tc.bodyErr) {
				t.Errorf("reading the body: %v, want %v", err, tc.bodyErr)
			}
			if want := cmp.Or(tc.status, 200); res.StatusCode != want {
				t.Errorf("status %d, want %d", res.StatusCode, want)
			}
			if want := cmp.Or(tc.proto, "HTTP/1.1"); res.Proto != want {
				t.Errorf("protocol %s, want %s", res.Proto, want)
			}
			if string(b) != tc.body {
				t.Errorf("body %q (%d bytes), want %q (%d bytes)", abbrev(b), len(b), abbrev([]byte(tc.body)), len(tc.body))
			}
			if chunked := slices.Equal(res.TransferEncoding, []string{"chunked"}); chunked != tc.chunked {
				t.Errorf("chunked %v, want %v; read:\n%s", chunked, tc.chunked, abbrev(c.raw.Bytes()))
			}
			for k, want := range tc.header {
				if got, ok := res.Header[k]; want == "" && ok || want != "" && (len(got) != 1 || got[0] != want) {
					t.Errorf("header %s: %q, want %q", k, got, want)
				}
			}
			if tc.wantErr != nil {
				select {
				case err := <-handlerErr:
					if !errors.Is(err, tc.wantErr) {
						t.Errorf("handler's Write: %v, want %v", err, tc.wantErr)
					}
				case <-time.After(2 * time.Second):
					t.Error("handler did not report its Write")
				}
			}
			if tc.next == "" {
				c.expectClosed(2 * time.Second)
				return
			}
			c.raw.Reset()
			c.send(tc.next)
			if res, body := c.read("GET"); res.StatusCode != 200 || body != "next" {
				t.Errorf("next request on the connection: %d %q, want 200 \"next\" (read %q)", res.StatusCode, body, c.raw.String())
			}
		})
	}
}

// echoBody answers with the request's body.
func echoBody(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Write(b)
}

func abbrev(b []byte) string {
	if len(b) > 300 {
		return string(b[:200]) + "..." + string(b[len(b)-40:])
	}
	return string(b)
}

func TestServerRequestBodies(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64 // requests whose handler read the body
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refuse":
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, "too large")
		case "/ignore":
			io.WriteString(w, "ignored")
		default:
			reads.Add(1)
			srvEcho(w, r)
		}
	})})

	t.Run("Content-Length", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
		c.want200("POST", "POST /x hello world")
	})
	t.Run("chunked", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		c.want200("POST", "POST /x hello world")
	})
	t.Run("100-continue when the handler reads", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		res, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("no interim answer: %v (read %q)", err, c.raw.String())
		}
		if res.StatusCode != http.StatusContinue || !strings.HasPrefix(c.raw.String(), "HTTP/1.1 100 Continue\r\n") {
			t.Fatalf("first answer %q, want HTTP/1.1 100 Continue", c.raw.String())
		}
		c.send("hello")
		c.want200("POST", "POST /x hello")
	})
	t.Run("100-continue refused", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST /refuse HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
		res, body := c.read("POST")
		if res.StatusCode != http.StatusRequestEntityTooLarge || body != "too large" || !res.Close {
			t.Fatalf("answer %d %q close=%v, want 413 \"too large\" with Connection: close (read %q)", res.StatusCode, body, res.Close, c.raw.String())
		}
		c.expectClosed(2 * time.Second)
	})
	t.Run("unknown Expect", func(t *testing.T) {
		before := reads.Load()
		c := dialRaw(t, ts.addr)
		c.send("POST /x HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello")
		res, body := c.read("POST")
		checkAPIError(t, res, body, http.StatusExpectationFailed, "expectation_failed")
		c.expectClosed(2 * time.Second)
		if reads.Load() != before {
			t.Error("the handler ran for a request with an unknown Expect")
		}
	})
	// An empty Expect asks nothing: net/http's server serves the request.
	t.Run("empty Expect", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST /x HTTP/1.1\r\nHost: t\r\nExpect: \r\nContent-Length: 5\r\n\r\nhello")
		c.want200("POST", "POST /x hello")
	})
	t.Run("small unread body is discarded", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		body := strings.Repeat("x", 100<<10)
		c.send(fmt.Sprintf("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
		if res, body := c.read("POST"); res.StatusCode != 200 || body != "ignored" || res.Close {
			t.Fatalf("answer %d %q close=%v, want 200 \"ignored\" kept open", res.StatusCode, body, res.Close)
		}
		c.send(get("/again"))
		c.want200("GET", "GET /again ")
	})
	t.Run("big unread body closes", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		const n = 1 << 20
		wrote := make(chan error, 1)
		go func() {
			_, err := fmt.Fprintf(c.Conn, "POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("x", n))
			wrote <- err
		}()
		res, body := c.read("POST")
		if res.StatusCode != 200 || body != "ignored" || !res.Close {
			t.Fatalf("answer %d %q close=%v, want 200 \"ignored\" with Connection: close", res.StatusCode, body, res.Close)
		}
		c.expectClosed(2 * time.Second)
		c.Close()
		<-wrote // the server did not read it all: failed or not, it ends with the close
	})
	t.Run("a big declared body is not waited for", func(t *testing.T) {
		// Only the header is sent: the answer must not wait for a body
		// the server would not keep the connection for anyway.
		c := dialRaw(t, ts.addr)
		c.send("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
		if res, body := c.read("POST"); res.StatusCode != 200 || body != "ignored" || !res.Close {
			t.Fatalf("answer %d %q close=%v, want 200 \"ignored\" with Connection: close", res.StatusCode, body, res.Close)
		}
	})
}

// A client that stalls in a body the handler left unread holds its
// connection no longer than ReadHeaderTimeout.
func TestServerStalledDrainIsClosed(t *testing.T) {
	t.Parallel()
	const header = 200 * time.Millisecond
	ts := startServer(t, &Server{ReadHeaderTimeout: header, WatchInterval: 20 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ignored") })})
	c := dialRaw(t, ts.addr)
	start := time.Now()
	c.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nonly ten b")
	c.expectClosed(2 * time.Second)
	if d := time.Since(start); d < header {
		t.Errorf("closed after %v, before the ReadHeaderTimeout (%v)", d, header)
	}
}

// apiError is the JSON body of an answer to a malformed request.
type apiError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func checkAPIError(t *testing.T, res *http.Response, body string, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Errorf("status %d, want %d (body %q)", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if !res.Close {
		t.Error("no Connection: close")
	}
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if e.Error.Type != "invalid_request_error" || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("error %+v, want type invalid_request_error, code %q and a message", e.Error, code)
	}
}

func TestServerBadInput(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	ts := startServer(t, &Server{MaxHeaderBytes: 1024, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
	})})
	for _, tc := range []struct {
		name, input string
		status      int
		code        string
	}{
		{"garbage request line", "garbage\r\n\r\n", 400, "bad_request"},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"},
		{"headers too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 16<<10) + "\r\n\r\n", 431, "request_header_fields_too_large"},
		// Beyond MaxHeaderBytes and the 4 KiB that net/http allows on top
		// of it (net/http answers this 431).
		{"headers beyond MaxHeaderBytes and 4 KiB", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 6<<10) + "\r\n\r\n", 431, "request_header_fields_too_large"},
		// net/http's server refuses header names that are not tokens
		// (the parser lets a space before the colon through: a proxy in
		// front could take this for the framing header) and values with
		// control characters, and Host headers with bytes no host has.
		{"space before a header's colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n", 400, "bad_request"},
		{"control character in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", 400, "bad_request"},
		{"malformed Host", "GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", 400, "bad_request"},
		{"header line without a colon", "GET / HTTP/1.1\r\nHost: a\r\nAuthorization Bearer en_secret123\r\n\r\n", 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, ts.addr)
			c.send(tc.input)
			res, body := c.read("GET")
			checkAPIError(t, res, body, tc.status, tc.code)
			if strings.Contains(c.raw.String(), "en_secret123") {
				t.Errorf("the answer repeats the request's secret: %q", c.raw.String())
			}
			c.expectClosed(2 * time.Second)
		})
	}
	t.Cleanup(func() {
		if n := calls.Load(); n != 0 {
			t.Errorf("the handler ran %d times for malformed requests", n)
		}
	})
}

// RFC 9112 3.2: an empty Host is what a client sends when the target has
// no authority; net/http's server serves it. A missing Host is served too,
// where net/http's server answers 400: http.ReadRequest removes the header,
// so the two cannot be told apart (a choice documented on checkRequest).
func TestServerEmptyHost(t *testing.T) {
	t.Parallel()
	ts := startServer(t, &Server{Handler: http.HandlerFunc(srvEcho)})
	c := dialRaw(t, ts.addr)
	c.send("GET /e HTTP/1.1\r\nHost: \r\n\r\n")
	c.want200("GET", "GET /e ")
	c.send("GET /m HTTP/1.1\r\n\r\n")
	c.want200("GET", "GET /m ")
}

func TestServerHeaderSafety(t *testing.T) {
	t.Parallel()
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Value", "a\r\nX-Injected: 1")
		h["X-Name\r\nX-Injected2"] = []string{"1"}
		h["Bad Name"] = []string{"1"}
		h["Bad:Name"] = []string{"1"}
		h["X-Good"] = []string{"ok"}
		if r.URL.Path == "/close" {
			h.Set("Connection", "close")
		}
		io.WriteString(w, "body")
	})})
	c := dialRaw(t, ts.addr)
	c.send(get("/"))
	res, body := c.read("GET")
	if res.StatusCode != 200 || body != "body" {
		t.Fatalf("answer %d %q", res.StatusCode, body)
	}
	// Every line of the header is one of these fields: nothing injected,
	// no invalid name.
	head, _, _ := strings.Cut(c.raw.String(), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")[1:]
	for _, line := range lines {
		name, _, _ := strings.Cut(line, ":")
		switch name {
		case "X-Value", "X-Good", "Content-Length", "Content-Type", "Date":
		default:
			t.Errorf("header line %q; header:\n%s", line, head)
		}
	}
	if len(lines) != 5 {
		t.Errorf("%d header lines, want 5:\n%s", len(lines), head)
	}
	if got := res.Header.Get("X-Value"); got != "a  X-Injected: 1" {
		t.Errorf("X-Value %q, want the line break as spaces", got)
	}
	if got := res.Header.Get("X-Good"); got != "ok" {
		t.Errorf("X-Good %q, want ok", got)
	}

	c.send(get("/close"))
	c.raw.Reset()
	res, body = c.read("GET")
	if res.StatusCode != 200 || body != "body" || !res.Close || !strings.Contains(c.raw.String(), "\r\nConnection: close\r\n") {
		t.Fatalf("answer %q, want 200 \"body\" with Connection: close", c.raw.String())
	}
	c.expectClosed(2 * time.Second)
}

func TestServerTimeouts(t *testing.T) {
	t.Parallel()
	const header, idle = 200 * time.Millisecond, 1500 * time.Millisecond
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	ts := startServer(t, &Server{
		ReadHeaderTimeout: header,
		IdleTimeout:       idle,
		WatchInterval:     20 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/wait" {
				srvEcho(w, r)
				return
			}
			io.ReadAll(r.Body)
			started <- struct{}{}
			<-r.Context().Done()
			cancelled <- struct{}{}
		}),
	})

	t.Run("new connection that sends nothing", func(t *testing.T) {
		// As net/http, whose ReadHeaderTimeout starts at accept: not the
		// idle timeout, which would let a client hold connections open
		// without ever sending a request.
		t.Parallel()
		start := time.Now()
		c := dialRaw(t, ts.addr)
		c.expectClosed(4 * time.Second)
		if d := time.Since(start); d < header || d >= idle {
			t.Errorf("closed after %v, want the ReadHeaderTimeout (%v), not the IdleTimeout (%v)", d, header, idle)
		}
	})
	t.Run("idle after a request", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, ts.addr)
		start := time.Now()
		c.send(get("/x"))
		c.want200("GET", "GET /x ")
		c.expectClosed(4 * time.Second)
		if d := time.Since(start); d < idle {
			t.Errorf("closed after %v, before the IdleTimeout (%v)", d, idle)
		}
	})
	t.Run("half a header", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, ts.addr)
		start := time.Now()
		c.send("GET / HTTP/1.1\r\nHost: t\r\nX-Half: ")
		c.expectClosed(2 * time.Second)
		if d := time.Since(start); d < header {
			t.Errorf("closed after %v, before the ReadHeaderTimeout (%v)", d, header)
		}
	})
	// Not parallel: they share the handler's channels.
	for _, req := range []string{
		"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
	} {
		t.Run("hang-up cancels "+req[:4], func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.send(req)
			within(t, started, 2*time.Second, "handler started")
			select {
			case <-cancelled:
				t.Fatal("request's context cancelled while its client is connected")
			case <-time.After(300 * time.Millisecond):
			}
			c.Close()
			within(t, cancelled, time.Second, "request's context cancelled after the client hung up")
		})
	}
}

// syncBuffer is a bytes.Buffer for a log written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestServerPanics(t *testing.T) {
	t.Parallel()
	var logged syncBuffer
	ts := startServer(t, &Server{
		Log: slog.New(slog.NewTextHandler(&logged, nil)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/abort":
				io.WriteString(w, "partial")
				panic(http.ErrAbortHandler)
			case "/panic":
				panic("boom")
			}
			io.WriteString(w, "ok")
		}),
	})
	ok := func() {
		t.Helper()
		c := dialRaw(t, ts.addr)
		c.send(get("/"))
		c.want200("GET", "ok")
	}

	c := dialRaw(t, ts.addr)
	c.send(get("/"))
	c.want200("GET", "ok")
	c.send(get("/abort"))
	c.expectClosed(2 * time.Second)
	if s := logged.String(); s != "" {
		t.Errorf("ErrAbortHandler was logged: %s", s)
	}
	ok()

	c = dialRaw(t, ts.addr)
	c.send(get("/panic"))
	c.expectClosed(2 * time.Second)
	if s := logged.String(); !strings.Contains(s, "boom") || !strings.Contains(s, "level=ERROR") {
		t.Errorf("the panic was not logged as an error: %q", s)
	}
	ok()
}

func TestServerShutdownLetsRequestsFinish(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})})
	idle := dialRaw(t, ts.addr)
	idle.send(get("/fast"))
	if res, body := idle.read("GET"); res.StatusCode != 200 || body != "done /fast" || res.Close {
		t.Fatalf("answer %d %q close=%v", res.StatusCode, body, res.Close)
	}
	busy := dialRaw(t, ts.addr)
	busy.send(get("/slow"))
	within(t, started, 2*time.Second, "slow handler started")

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	idle.expectClosed(time.Second)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	once.Do(func() { close(release) })
	res, body := busy.read("GET")
	if res.StatusCode != 200 || body != "done /slow" || !res.Close || !strings.Contains(busy.raw.String(), "\r\nConnection: close\r\n") {
		t.Fatalf("answer %q, want 200 \"done /slow\" with Connection: close", busy.raw.String())
	}
	busy.expectClosed(time.Second)
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Shutdown did not return after the last request")
	}
	within(t, ts.done, 2*time.Second, "Serve returned")
	if !errors.Is(ts.err, http.ErrServerClosed) {
		t.Errorf("Serve: %v, want http.ErrServerClosed", ts.err)
	}
	if nc, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		nc.Close()
		t.Error("the listener still accepts after Shutdown")
	}
}

// A client that connected just before Shutdown began has its request on the
// way: it is answered (with Connection: close), as net/http does, not cut
// off with the idle connections.
func TestServerShutdownAnswersANewConnectionsFirstRequest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, &Server{Handler: http.HandlerFunc(srvEcho)})
	c := dialRaw(t, ts.addr)
	deadline := time.Now().Add(2 * time.Second)
	for { // until the server holds the connection
		ts.mu.Lock()
		n := len(ts.conns)
		ts.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not take the connection")
		}
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	for !ts.shutdown.Load() {
		time.Sleep(time.Millisecond)
	}
	// Shutdown closes idle connections at once and then at least every
	// 100 ms: by now it has looked at this one.
	time.Sleep(150 * time.Millisecond)
	c.send(get("/late"))
	if res := c.want200("GET", "GET /late "); !res.Close {
		t.Error("the answer during Shutdown does not close the connection")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Shutdown did not return after the request")
	}
}

func TestServerShutdownContextExpires(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}), make(chan struct{})
	ts := startServer(t, &Server{WatchInterval: 20 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})})
	c := dialRaw(t, ts.addr)
	c.send(get("/"))
	within(t, started, 2*time.Second, "handler started")
	const wait = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	err := ts.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d < wait {
		t.Errorf("Shutdown returned after %v, before its context ended (%v)", d, wait)
	}
	within(t, cancelled, 2*time.Second, "handler's context cancelled")
	c.expectClosed(time.Second)
	within(t, ts.done, 2*time.Second, "Serve returned")
	if !errors.Is(ts.err, http.ErrServerClosed) {
		t.Errorf("Serve: %v, want http.ErrServerClosed", ts.err)
	}
}

func TestServerH2CFallback(t *testing.T) {
	t.Parallel()
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	fallback := &http.Server{
		Protocols: &p,
		ErrorLog:  log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "fallback %s %s", r.Proto, r.URL.Path)
		}),
	}
	ts := startServer(t, &Server{Fallback: fallback, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "h1 %s %s", r.Proto, r.URL.Path)
	})})

	t.Run("h2c with prior knowledge", func(t *testing.T) {
		var p2 http.Protocols
		p2.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p2}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for _, path := range []string{"/a", "/b"} {
			res, err := client.Get("http://" + ts.addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.ProtoMajor != 2 || string(b) != "fallback HTTP/2.0 "+path {
				t.Fatalf("answer over HTTP/%d: %q (%v), want HTTP/2 \"fallback HTTP/2.0 %s\"", res.ProtoMajor, b, err, path)
			}
		}
	})
	for _, tc := range []struct{ name, first, rest, want string }{
		{"short HTTP/1.0 request", "GET /s HTTP/1.0\r\n\r\n", "", "h1 HTTP/1.0 /s"},
		{"HTTP/1.1 request", get("/g"), "", "h1 HTTP/1.1 /g"},
		// The first read holds only "P", which could begin the preface:
		// the request is still shorter than the preface.
		{"short request starting like the preface", "P", "UT /p HTTP/1.0\r\n\r\n", "h1 HTTP/1.0 /p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.send(tc.first)
			if tc.rest != "" {
				time.Sleep(50 * time.Millisecond) // so that the server reads the first part alone
				c.send(tc.rest)
			}
			res, body := c.read("GET")
			if res.StatusCode != 200 || body != tc.want {
				t.Fatalf("answer %d %q, want 200 %q", res.StatusCode, body, tc.want)
			}
		})
	}
}

// Many clients on kept-alive connections; run with -race.
func TestServerConcurrentClients(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	conns := map[string]bool{}
	ts := startServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		srvEcho(w, r)
	})})
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				body := fmt.Sprintf("%d-%d-%s", g, i, strings.Repeat("z", i*37))
				res, err := client.Post("http://"+ts.addr+"/e", "text/plain", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || string(b) != "POST /e "+body {
					errs <- fmt.Errorf("answer %d %q (%v) to %q", res.StatusCode, b, err, body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) > 64 {
		t.Errorf("%d connections for 800 requests of 16 clients: keep-alive does not work", len(conns))
	}
}

// fuzzEcho reads the whole body and answers with the request's method,
// path and body length as JSON.
func fuzzEcho(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Method, Path string
		Length       int
	}{r.Method, r.URL.Path, len(b)})
}

// fuzzAnswer is the first answer on a connection, or closed.
type fuzzAnswer struct {
	closed bool // the connection was closed without an answer
	status int
	body   string
}

// countingReader counts what it reads.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// fuzzExchange sends in (then half-closes) and reads the first final answer.
func fuzzExchange(addr string, in []byte, method string) (fuzzAnswer, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return fuzzAnswer{}, err
	}
	nc.SetDeadline(time.Now().Add(2 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		nc.Write(in)
		nc.(*net.TCPConn).CloseWrite()
	}()
	defer func() {
		nc.Close()
		<-wrote
	}()
	cr := &countingReader{r: nc}
	br := bufio.NewReader(cr)
	for {
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			return fuzzAnswer{}, fmt.Errorf("neither an answer nor a close within 2 s (read %d bytes)", cr.n)
		case cr.n == 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
			return fuzzAnswer{closed: true}, nil
		default:
			return fuzzAnswer{}, fmt.Errorf("answer not readable: %w", err)
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return fuzzAnswer{}, fmt.Errorf("answer %d: body after %q: %w", res.StatusCode, b, err)
		}
		return fuzzAnswer{status: res.StatusCode, body: string(b)}, nil
	}
}

// FuzzServerRequest sends arbitrary bytes as a request stream to the Server
// and to net/http's server with the same handler: the Server answers
// something readable or closes, within 2 s, and answers the first request
// as net/http does when net/http answers it 200.
func FuzzServerRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"garbage\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer en_secret\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("a", 10<<10) + "\r\n\r\n",
		"GET /old HTTP/1.0\r\n\r\n",
		"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	ours := startServer(f, &Server{Handler: http.HandlerFunc(fuzzEcho), ReadHeaderTimeout: time.Second, MaxHeaderBytes: 4096})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	std := &http.Server{
		Handler:                      http.HandlerFunc(fuzzEcho),
		ReadHeaderTimeout:            time.Second,
		MaxHeaderBytes:               4096,
		ErrorLog:                     log.New(io.Discard, "", 0),
		DisableGeneralOptionsHandler: true, // OPTIONS * goes to the handler, as with the Server
	}
	go std.Serve(ln)
	f.Cleanup(func() { std.Close() })
	stdAddr := ln.Addr().String()

	f.Fuzz(func(t *testing.T, in []byte) {
		method := http.MethodGet // to read the first answer: HEAD has no body
		if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in))); err == nil {
			method = req.Method
		}
		got, err := fuzzExchange(ours.addr, in, method)
		if err != nil {
			t.Fatalf("Server on %q: %v", in, err)
		}
		want, err := fuzzExchange(stdAddr, in, method)
		if err != nil || want.status != http.StatusOK {
			return
		}
		if got.status != want.status || got.body != want.body {
			t.Fatalf("on %q\nServer:   %d %q (closed without answer: %v)\nnet/http: %d %q", in, got.status, got.body, got.closed, want.status, want.body)
		}
	})
}

// A streamed answer's chunks cost no allocation: each Write and Flush of an
// answer already sent chunked formats the chunk's size in the connection's
// own buffer. (A size formatted into a local array escaped to the heap
// once per chunk.)
func TestServerStreamedChunkDoesNotAllocate(t *testing.T) {
	c := &sconn{s: &Server{}, bw: newWriteBuffer(io.Discard)}
	w := &c.res
	w.c = c
	w.reset(httptest.NewRequest("POST", "/v1/chat/completions", nil))
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	if err := w.FlushError(); err != nil || !w.chunked {
		t.Fatalf("flush: %v, chunked %v; want the answer sent chunked", err, w.chunked)
	}
	chunk := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n")
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if err := w.FlushError(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per streamed chunk, want 0", allocs)
	}
}
