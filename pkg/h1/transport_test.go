package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a test server that counts the connections it accepts.
type upstream struct {
	*httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	open  []net.Conn
}

func newUpstream(t testing.TB, h http.HandlerFunc, tls bool) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
			u.mu.Lock()
			u.open = append(u.open, c)
			u.mu.Unlock()
		}
	}
	if tls {
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	return u
}

// closeAll closes every connection from the server's side, as an upstream
// that drops idle connections does.
func (u *upstream) closeAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.open {
		c.Close()
	}
	u.open = nil
}

func transportFor(u *upstream) *Transport {
	t := New(5*time.Second, nil)
	if u.TLS != nil {
		t.TLSClientConfig = u.Client().Transport.(*http.Transport).TLSClientConfig
	}
	return t
}

func post(t *testing.T, tr http.RoundTripper, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return tr.RoundTrip(req)
}

// mustPost posts an empty body to u, and fails the test if no answer comes.
func mustPost(t *testing.T, tr *Transport, u *upstream) *http.Response {
	t.Helper()
	res, err := post(t, tr, context.Background(), u.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	res.Body.Close()
	return string(b)
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Path", r.URL.RequestURI())
	fmt.Fprintf(w, "%s %s", r.Method, b)
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			u := newUpstream(t, echo, tls)
			tr := transportFor(u)
			defer tr.CloseIdleConnections()
			for i := range 5 {
				res, err := post(t, tr, context.Background(), u.URL+"/v1/x?a=1", fmt.Sprint(i))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := readAll(t, res), fmt.Sprintf("POST %d", i); got != want || res.Header.Get("X-Path") != "/v1/x?a=1" {
					t.Fatalf("answer %q %q, want %q", got, res.Header.Get("X-Path"), want)
				}
			}
			if n := u.conns.Load(); n != 1 {
				t.Errorf("%d connections for 5 sequential requests, want 1", n)
			}
		})
	}
}

func TestAnswerNotReadToItsEndClosesTheConnection(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 100_000))
	}, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	res := mustPost(t, tr, u)
	buf := make([]byte, 10)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	res.Body.Close() // the rest of the answer is still on the connection
	res = mustPost(t, tr, u)
	if got := readAll(t, res); len(got) != 100_000 {
		t.Fatalf("second answer %d bytes", len(got))
	}
	if n := u.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the first one closed, not reused with unread bytes)", n)
	}
}

func TestIdleConnectionClosedByTheUpstreamIsNotUsed(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			u := newUpstream(t, echo, tls)
			tr := transportFor(u)
			defer tr.CloseIdleConnections()
			res, err := post(t, tr, context.Background(), u.URL, "a")
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, res)
			u.closeAll()
			time.Sleep(50 * time.Millisecond) // let the FIN arrive
			res, err = post(t, tr, context.Background(), u.URL, "b")
			if err != nil {
				t.Fatalf("request after the upstream closed the idle connection: %v", err)
			}
			if got := readAll(t, res); got != "POST b" {
				t.Errorf("answer %q", got)
			}
			if n := u.conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

func TestConnectionCloseAndChunkedAnswers(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush() // chunked
		}
	}, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	for _, path := range []string{"/chunked", "/chunked", "/close", "/chunked"} {
		res, err := post(t, tr, context.Background(), u.URL+path, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); got != "part0;part1;part2;" {
			t.Fatalf("%s: %q", path, got)
		}
	}
	if n := u.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (a new one after Connection: close)", n)
	}
}

// holdingUpstream answers first (flushed, when not empty) and then holds
// each request until its client goes or the test ends.
func holdingUpstream(t *testing.T, first string) *upstream {
	release := make(chan struct{})
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if first != "" {
			w.Write([]byte(first))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, false)
	t.Cleanup(func() { close(release) }) // before the server's own cleanup, which waits for its handlers
	return u
}

func TestCancelEndsAReadAtOnce(t *testing.T) {
	u := holdingUpstream(t, "first")
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := post(t, tr, ctx, u.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { _, err := res.Body.Read(make([]byte, 10)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read after cancel succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not end after the context was cancelled")
	}
	res.Body.Close()
}

func TestResponseHeaderTimeout(t *testing.T) {
	u := holdingUpstream(t, "")
	tr := transportFor(u)
	tr.ResponseHeaderTimeout = 100 * time.Millisecond
	defer tr.CloseIdleConnections()
	_, err := post(t, tr, context.Background(), u.URL, "")
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("err = %v, want the header timeout", err)
	}
}

func TestUnreachableUpstream(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tr := New(time.Second, nil)
	if _, err := post(t, tr, context.Background(), "http://"+addr, "x"); err == nil {
		t.Fatal("no error for a closed port")
	}
}

type countingRT struct{ n atomic.Int64 }

func (c *countingRT) RoundTrip(*http.Request) (*http.Response, error) {
	c.n.Add(1)
	return nil, errors.New("fallback")
}

func TestProxiedAndOtherSchemesGoToTheFallback(t *testing.T) {
	fb := &countingRT{}
	proxied := New(time.Second, func(u *url.URL) (*url.URL, error) {
		if u.Host == "via-proxy.example" {
			return url.Parse("http://proxy.example:3128")
		}
		return nil, nil
	})
	proxied.Fallback = fb
	for _, target := range []string{"http://via-proxy.example/x", "ftp://example/x"} {
		if _, err := post(t, proxied, context.Background(), target, ""); err == nil || err.Error() != "fallback" {
			t.Errorf("%s: err = %v, want the fallback's", target, err)
		}
	}
	if fb.n.Load() != 2 {
		t.Errorf("fallback used %d times, want 2", fb.n.Load())
	}
}

// Many goroutines share the pool; run with -race.
func TestConcurrentRequests(t *testing.T) {
	u := newUpstream(t, echo, false)
	tr := transportFor(u)
	tr.MaxIdlePerHost = 4
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				body := fmt.Sprintf("%d-%d", g, i)
				res, err := post(t, tr, context.Background(), u.URL, body)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || string(b) != "POST "+body {
					errs <- fmt.Errorf("answer %q (%v) to %s", b, err, body)
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
	tr.mu.Lock()
	idle := len(tr.idle[u.URL])
	tr.mu.Unlock()
	if idle > 4 {
		t.Errorf("%d idle connections kept, want at most MaxIdlePerHost (4)", idle)
	}
}

// Informational answers before the real one are skipped; answers without a
// body give the connection back at once.
func TestEarlyHintsAndEmptyAnswers(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Write([]byte("after hints"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	res, err := post(t, tr, context.Background(), u.URL+"/hints", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); res.StatusCode != 200 || got != "after hints" {
		t.Fatalf("answer %d %q, want 200 after the 103", res.StatusCode, got)
	}
	for range 3 {
		res, err := post(t, tr, context.Background(), u.URL+"/empty", "")
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d", res.StatusCode)
		}
		res.Body.Close() // closed unread, as callers do with an empty answer
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A request whose context has ended leaves the idle connections alone (a
// write failing on a cancelled context is not a stale connection to retry).
func TestCancelledRequestKeepsThePool(t *testing.T) {
	u := newUpstream(t, echo, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for range 4 { // four idle connections
		wg.Go(func() {
			res, err := post(t, tr, context.Background(), u.URL, "x")
			if err == nil {
				readAll(t, res)
			}
		})
	}
	wg.Wait()
	tr.mu.Lock()
	before := len(tr.idle[u.URL])
	tr.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := post(t, tr, ctx, u.URL, "y"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	tr.mu.Lock()
	after := len(tr.idle[u.URL])
	tr.mu.Unlock()
	if before == 0 || after != before {
		t.Errorf("idle connections %d before, %d after a cancelled request", before, after)
	}
}

// steppedUpstream answers with a stream that it sends a step at a time, each
// when the test says so on next: "one", "two", then the answer's end.
func steppedUpstream(t *testing.T, tls bool) (*upstream, chan<- struct{}) {
	next := make(chan struct{})
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // the header, alone
		for _, part := range []string{"one", "two", ""} {
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
			if part == "" {
				return // the chunked body's end goes out
			}
			w.Write([]byte(part))
			w.(http.Flusher).Flush()
		}
	}, tls)
	return u, next
}

// waitArrived waits up to 10 s for arrived to say yes, after what happened.
func waitArrived(t *testing.T, arrived func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !arrived(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s, but Arrived is still false", what)
		}
	}
}

// TestArrivedSaysWhetherAReadWouldWait follows a streamed answer: Arrived
// is false while the upstream holds the next part back, true once it has
// been sent (and once the answer's end has), false after the end is read;
// over plain TCP (where it reads ahead) and under TLS (where it peeks).
func TestArrivedSaysWhetherAReadWouldWait(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "tls"}[tls], func(t *testing.T) { arrivedSaysWhetherAReadWouldWait(t, tls) })
	}
}

func arrivedSaysWhetherAReadWouldWait(t *testing.T, tls bool) {
	u, next := steppedUpstream(t, tls)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	res := mustPost(t, tr, u)
	defer res.Body.Close()
	arrived := res.Body.(interface{ Arrived() bool }).Arrived
	buf := make([]byte, 64)
	for _, part := range []string{"one", "two"} {
		if arrived() {
			t.Fatalf("Arrived before %q was sent", part)
		}
		next <- struct{}{}
		waitArrived(t, arrived, strconv.Quote(part)+" was sent")
		n, err := res.Body.Read(buf)
		if err != nil || string(buf[:n]) != part {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, part)
		}
	}
	if arrived() {
		t.Fatal("Arrived before the end was sent")
	}
	if allocs := testing.AllocsPerRun(100, func() { arrived() }); allocs != 0 {
		t.Errorf("Arrived allocates %v times per call", allocs)
	}
	next <- struct{}{}
	waitArrived(t, arrived, "the end was sent")
	if n, err := res.Body.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read %q, %v; want the end", buf[:n], err)
	}
	if arrived() {
		t.Error("Arrived after the end was read")
	}
}

// readCountingConn counts the reads of its TCP connection that go through
// Read, and keeps its socket visible (SyscallConn), so that the Transport
// can still look at it without reading.
type readCountingConn struct {
	*net.TCPConn
	reads *atomic.Int64
}

func (c readCountingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.TCPConn.Read(p)
}

// What Arrived found on the socket is handed to the next Read without
// another read of the socket; the connection is then used again.
func TestArrivedReadsWhatItFinds(t *testing.T) {
	u, next := steppedUpstream(t, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	var reads atomic.Int64
	tr.dialFn = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return readCountingConn{c.(*net.TCPConn), &reads}, nil
	}
	for range 2 {
		res := mustPost(t, tr, u)
		arrived := res.Body.(interface{ Arrived() bool }).Arrived
		buf := make([]byte, 64)
		for _, part := range []string{"one", "two"} {
			next <- struct{}{}
			waitArrived(t, arrived, strconv.Quote(part)+" was sent")
			before := reads.Load()
			n, err := res.Body.Read(buf)
			if err != nil || string(buf[:n]) != part {
				t.Fatalf("read %q, %v; want %q", buf[:n], err, part)
			}
			if got := reads.Load() - before; got != 0 {
				t.Errorf("reading %q after Arrived read the socket %d more times, want 0", part, got)
			}
		}
		next <- struct{}{}
		if got := readAll(t, res); got != "" {
			t.Fatalf("after the parts: %q", got)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests in turn, want 1", n)
	}
}

// An upstream that closes the connection in the middle of an answer: Arrived
// says so (a read returns at once), and the read gives what came before the
// close, then the error.
func TestArrivedSeesTheUpstreamClose(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
		bw.Flush()
		c.Close()
	}, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	res := mustPost(t, tr, u)
	defer res.Body.Close()
	arrived := res.Body.(interface{ Arrived() bool }).Arrived
	var got []byte
	buf := make([]byte, 64)
	for {
		waitArrived(t, arrived, fmt.Sprintf("the upstream closed after %q", got))
		n, err := res.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if string(got) != "one" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read %q, then %v; want \"one\", then an unexpected EOF", got, err)
			}
			break
		}
	}
}

// A connection on which the upstream sent more than its answer is not used
// again: what it sent unasked would be taken for the next answer.
func TestConnectionWithBytesBeyondTheAnswerIsNotReused(t *testing.T) {
	var n atomic.Int64
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		i := n.Add(1)
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%dstale", i)
		bw.Flush()
		io.Copy(io.Discard, c) // until the client closes it
	}, false)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	for i := 1; i <= 2; i++ {
		res, err := post(t, tr, context.Background(), u.URL, "")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		// The answer and the stale bytes went out in one write, so they
		// arrived together: reading the answer puts the rest in the reader.
		if got := readAll(t, res); got != strconv.Itoa(i) {
			t.Fatalf("request %d: answer %q", i, got)
		}
	}
	if got := u.conns.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

// lateReader is a client connection whose reads wait, once a request has
// been written after armed was set, until the upstream has written all it
// means to: so that what the upstream wrote separately arrives together,
// as it may on any network.
type lateReader struct {
	net.Conn
	armed   *atomic.Bool
	sent    *atomic.Bool
	written <-chan struct{}
}

func (c lateReader) Write(p []byte) (int, error) {
	if c.armed.Load() {
		c.sent.Store(true)
	}
	return c.Conn.Write(p)
}

func (c lateReader) Read(p []byte) (int, error) {
	if c.sent.Load() {
		<-c.written
	}
	return c.Conn.Read(p)
}

// Under TLS, the TLS layer reads records ahead and holds them where neither
// the reader's buffer nor a peek at the socket sees them. An upstream that
// sent more than its answer (here a whole second answer, in a record of
// its own) must not have that taken as the answer to the next request,
// which may be another client's.
func TestTLSConnectionWithAnswerBeyondTheAnswerIsNotReused(t *testing.T) {
	written := make(chan struct{})
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/one" {
			io.WriteString(w, strings.TrimPrefix(r.URL.Path, "/"))
			return
		}
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
		bw.Flush() // one TLS record
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
		bw.Flush() // another
		close(written)
		io.Copy(io.Discard, c) // until the client closes it
	}, true)
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	var armed atomic.Bool
	tr.dialFn = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return lateReader{Conn: nc, armed: &armed, sent: new(atomic.Bool), written: written}, nil
	}
	for _, path := range []string{"warm", "one", "two"} {
		if path == "one" {
			armed.Store(true) // the connection's TLS handshake is over
		}
		res, err := post(t, tr, context.Background(), u.URL+"/"+path, "")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got := readAll(t, res); got != path {
			t.Fatalf("answer to /%s: %q", path, got)
		}
	}
	if got := u.conns.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

// hijacked is an upstream that writes raw bytes as its answer.
func hijacked(t *testing.T, answer func(w *bufio.ReadWriter)) *upstream {
	return newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/plain" {
			io.WriteString(w, "plain")
			return
		}
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		answer(bw)
		bw.Flush()
		io.Copy(io.Discard, c) // until the client closes it
	}, false)
}

// A 101 that was never asked for: what follows is another protocol, so the
// answer is an error and the connection is not used again.
func TestUnaskedSwitchingProtocolsIsRefused(t *testing.T) {
	u := hijacked(t, func(w *bufio.ReadWriter) {
		io.WriteString(w, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
		w.Flush()
		w.ReadString('\n') // the next request, if the client sent one here
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfrom-upgrade")
	})
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	_, err := post(t, tr, context.Background(), u.URL+"/upgrade", "")
	if err == nil || !strings.Contains(err.Error(), "switched protocols") {
		t.Fatalf("error %v, want one that says the upstream switched protocols", err)
	}
	res, err := post(t, tr, context.Background(), u.URL+"/plain", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); got != "plain" {
		t.Fatalf("next answer %q, want \"plain\"", got)
	}
	if got := u.conns.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

// Headers, informational answers included, are bounded as net/http's
// Transport bounds them: an upstream cannot make the edge hold an endless
// header.
func TestResponseHeadersAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
	}{
		{"one long header", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"},
		{"endless early hints", strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 300) +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := hijacked(t, func(w *bufio.ReadWriter) { io.WriteString(w, tc.answer) })
			tr := transportFor(u)
			tr.MaxResponseHeaderBytes = 4 << 10
			defer tr.CloseIdleConnections()
			_, err := post(t, tr, context.Background(), u.URL+"/big", "")
			if err == nil || !strings.Contains(err.Error(), "exceed 4096 bytes") {
				t.Fatalf("error %v, want one that says the headers exceed 4096 bytes", err)
			}
			// Under the limit the same answer is taken.
			tr.MaxResponseHeaderBytes = 64 << 10
			res, err := post(t, tr, context.Background(), u.URL+"/big", "")
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); got != "ok" {
				t.Fatalf("answer %q", got)
			}
			// The limit is on the headers: a body beyond it is read.
			res, err = post(t, tr, context.Background(), u.URL+"/plain", "")
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); got != "plain" {
				t.Fatalf("answer %q", got)
			}
		})
	}
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 100_000))
	}, false)
	tr := transportFor(u)
	tr.MaxResponseHeaderBytes = 4 << 10
	defer tr.CloseIdleConnections()
	for range 2 { // the second on the connection the first put back
		if got := readAll(t, mustPost(t, tr, u)); len(got) != 100_000 {
			t.Fatalf("answer of %d bytes, want 100000: the limit applies to headers only", len(got))
		}
	}
}

// A read after the answer broke off says so again, as net/http's does; it
// does not turn into a clean end.
func TestReadAfterAFailureFailsAgain(t *testing.T) {
	u := hijacked(t, func(w *bufio.ReadWriter) {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		w.Flush()
	})
	tr := transportFor(u)
	defer tr.CloseIdleConnections()
	res, err := post(t, tr, context.Background(), u.URL+"/short", "")
	if err != nil {
		t.Fatal(err)
	}
	go func() { // the upstream hangs up after "abc"
		time.Sleep(50 * time.Millisecond)
		u.closeAll()
	}()
	b, err := io.ReadAll(res.Body)
	if string(b) != "abc" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q, %v; want \"abc\" and io.ErrUnexpectedEOF", b, err)
	}
	if _, err := res.Body.Read(make([]byte, 1)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read again: %v, want io.ErrUnexpectedEOF again", err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 1)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read after Close: %v, want the first failure still", err)
	}

	res = mustPost(t, tr, u) // to /, which hijacks too: close it unread
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Errorf("read after Close: %v, want an error that is not io.EOF", err)
	}
}
