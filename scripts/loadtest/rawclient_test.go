package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/mockllm"
)

var testBodies = map[bool][]byte{
	false: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`),
	true:  []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"stream":true}`),
}

func testHeaders(streamed bool) [][2]string {
	h := [][2]string{{"Content-Type", "application/json"}}
	if streamed {
		h = append(h, [2]string{mockllm.HeaderChunks, "5"})
	}
	return h
}

// serveMock serves the mock upstream with each of the load test's servers.
func serveMock(t *testing.T, kind string) string {
	t.Helper()
	url, stop, err := startMock(kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// collect is a done callback that keeps the samples.
type collect struct {
	mu      sync.Mutex
	wg      sync.WaitGroup
	samples []sample
}

func (c *collect) done(s sample) {
	c.mu.Lock()
	c.samples = append(c.samples, s)
	c.mu.Unlock()
	c.wg.Done()
}

func TestRawClientAgainstTheMock(t *testing.T) {
	for _, kind := range []string{"h1", "net/http"} {
		t.Run(strings.ReplaceAll(kind, "/", "_"), func(t *testing.T) {
			cl, err := newRawClient(serveMock(t, kind), testBodies, testHeaders)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.closeAll()
			// Open loop: requests overlap, so some need a connection of
			// their own and the rest reuse idle ones.
			var c collect
			for i := range 40 {
				c.wg.Add(1)
				cl.send(i%2 == 1, time.Now(), c.done)
				if i%8 == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
			c.wg.Wait()
			for i, s := range c.samples {
				if s.err != nil {
					t.Fatalf("sample %d: %v", i, s.err)
				}
				if s.firstByte <= 0 || s.firstByte > s.total {
					t.Fatalf("sample %d: first byte %v, total %v", i, s.firstByte, s.total)
				}
			}
			cl.mu.Lock()
			conns, idle := len(cl.all), len(cl.idle)
			cl.mu.Unlock()
			if conns == 0 || conns >= 40 || idle != conns {
				t.Fatalf("%d connections for 40 requests, %d idle after: want reuse, and all idle", conns, idle)
			}

			// Closed loop: a worker's own connection, reused.
			rc, err := cl.dial()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 6 {
				s, ok := rc.roundTrip(i%2 == 0, time.Now())
				if s.err != nil || !ok {
					t.Fatalf("round trip %d: %v (connection usable: %v)", i, s.err, ok)
				}
			}
		})
	}
}

// answerWith answers the n-th request on each connection with answer(n),
// and closes the connection after it if hangUp.
func answerWith(t *testing.T, answer func(n int) (a string, hangUp bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body) //nolint:errcheck // a test server
					a, hangUp := answer(n)
					c.Write([]byte(a)) //nolint:errcheck // as above
					if hangUp {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestRawClientAnswers(t *testing.T) {
	const streamEnd = "data: [DONE]\n\n"
	chunked := func(parts ...string) string {
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, p := range parts {
			b.WriteString(strconv.FormatInt(int64(len(p)), 16) + "\r\n" + p + "\r\n")
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	for _, tc := range []struct {
		name, answer string
		streamed     bool
		wantErr      string // "" for a good sample
		keep         bool   // the connection carries the next request
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false, "", true},
		{"header case and spaces", "HTTP/1.1 200 OK\r\ncontent-LENGTH:   2  \r\n\r\n{}", false, "", true},
		{"stream", chunked("data: {}\n\n", streamEnd), true, "", true},
		{"stream, size with extension and trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nE;x=1\r\n" + streamEnd + "\r\n0\r\nX-T: 1\r\n\r\n", true, "", true},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", false, "", false},
		{"status 429", "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}", false, "status 429", false},
		{"empty body", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, "empty answer", false},
		{"stream cut short of [DONE]", chunked("data: {}\n\n"), true, "did not end with [DONE]", false},
		{"no framing", "HTTP/1.1 200 OK\r\n\r\n{}", false, "neither Content-Length nor chunked", false},
		{"bad status line", "HTTP/9 OK\r\n\r\n", false, "status line", false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, "Content-Length", false},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true, "chunk size", false},
		{"gzip framing", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, "Transfer-Encoding", false},
		{"header without colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, "header line", false},
		{"body cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", false, "unexpected EOF", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := answerWith(t, func(n int) (string, bool) {
				if n == 0 {
					return tc.answer, !tc.keep // a broken answer, and the server goes
				}
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false
			})
			cl, err := newRawClient(url, testBodies, testHeaders)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.closeAll()
			rc, err := cl.dial()
			if err != nil {
				t.Fatal(err)
			}
			rc.c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // a fresh connection
			s, ok := rc.roundTrip(tc.streamed, time.Now())
			switch {
			case tc.wantErr == "" && s.err != nil:
				t.Fatalf("error %v, want a good sample", s.err)
			case tc.wantErr != "" && (s.err == nil || !strings.Contains(s.err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one that says %q", s.err, tc.wantErr)
			case ok != tc.keep:
				t.Fatalf("connection usable: %v, want %v", ok, tc.keep)
			}
			if ok {
				if s, _ := rc.roundTrip(false, time.Now()); s.err != nil {
					t.Fatalf("next request on the connection: %v", s.err)
				}
			}
		})
	}
}

// TestRawClientConnectionClosedByServer: a connection the server closes,
// saying so or not, leaves the pool, and the next request dials a new one.
func TestRawClientConnectionClosedByServer(t *testing.T) {
	for _, header := range []string{"Connection: close\r\n", ""} {
		t.Run(strings.TrimSpace(header+"silently"), func(t *testing.T) {
			url := answerWith(t, func(int) (string, bool) {
				return "HTTP/1.1 200 OK\r\n" + header + "Content-Length: 2\r\n\r\n{}", true
			})
			cl, err := newRawClient(url, testBodies, testHeaders)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.closeAll()
			for i := range 3 {
				var c collect
				c.wg.Add(1)
				cl.send(false, time.Now(), c.done)
				c.wg.Wait()
				if err := c.samples[0].err; err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				// The reader sees the end of the connection and drops it.
				deadline := time.Now().Add(5 * time.Second)
				for {
					cl.mu.Lock()
					conns, idle := len(cl.all), len(cl.idle)
					cl.mu.Unlock()
					if conns == 0 && idle == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("request %d: %d connections (%d idle) still kept after the server closed them", i, conns, idle)
					}
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
}

// FuzzRawAnswer reads arbitrary bytes as an answer: never a panic, and an
// answer the raw client accepts, if net/http reads it too, is a 200 with a
// body of the same length there.
func FuzzRawAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		for _, streamed := range []bool{false, true} {
			rc := &rawConn{br: bufio.NewReaderSize(bytes.NewReader(answer), 64)}
			s, _, err := rc.readAnswer(streamed, time.Now())
			if err != nil {
				continue
			}
			if s.total < 0 || s.firstByte > s.total {
				t.Fatalf("times: first byte %v, total %v", s.firstByte, s.total)
			}
			// net/http is stricter in places (the raw client only needs to
			// read the load test's own servers), so only answers it reads
			// too are compared.
			res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(answer)), nil)
			if err != nil {
				continue
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				continue
			}
			if res.StatusCode != 200 || int64(len(body)) != s.size {
				t.Fatalf("the raw client read a 200 of %d bytes; net/http reads status %d, %d bytes", s.size, res.StatusCode, len(body))
			}
		}
	})
}
