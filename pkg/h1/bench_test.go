package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkServer sends requests one after another on one keep-alive
// connection over loopback to this package's Server and to net/http's, with
// a handler that reads a chat-sized body and answers 1 KB of JSON, as the
// edge does: the time and allocations per request of the server's own work,
// plus two system calls and the client's minimal parsing, which are the same
// for both. The "-12KB" runs answer 12 KB instead: more than a connection's
// 4 KB write buffer.
//
//	go test ./pkg/h1 -run '^$' -bench Server -benchmem -count 6
func BenchmarkServer(b *testing.B) {
	answerOf := func(words int) []byte {
		return []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` +
			strings.Repeat("lorem ipsum ", words) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76}}`)
	}
	small, large := answerOf(70), answerOf(1000)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := small
		if r.URL.Path == "/large" {
			answer = large
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Ratelimit-Limit-Requests", "600")
		h.Set("X-Ratelimit-Remaining-Requests", "599")
		if len(answer) > 4<<10 {
			h.Set("Content-Length", strconv.Itoa(len(answer))) // net/http would send it chunked
		}
		w.WriteHeader(http.StatusOK)
		w.Write(answer) //nolint:errcheck // the benchmark's client checks the answer
	})
	body := `{"model":"gpt-4","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 40) + `"}],"max_tokens":64}`
	requestTo := func(path string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer en_0123456789abcdefghijklmnopqrstuv\r\n" +
			"Content-Type: application/json\r\nUser-Agent: bench\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}

	servers := []struct {
		name  string
		serve func(net.Listener) (stop func())
	}{
		{"h1", func(ln net.Listener) func() {
			s := &Server{Handler: handler}
			go s.Serve(ln) //nolint:errcheck // ends with Close
			return func() { s.Close() }
		}},
		{"net-http", func(ln net.Listener) func() {
			s := &http.Server{Handler: handler}
			go s.Serve(ln) //nolint:errcheck // ends with Close
			return func() { s.Close() }
		}},
	}
	for _, srv := range servers {
		for _, size := range []struct {
			suffix, path string
			answer       []byte
		}{{"", "/v1/chat/completions", small}, {"-12KB", "/large", large}} {
			request, answer := requestTo(size.path), size.answer
			b.Run(srv.name+size.suffix, func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				stop := srv.serve(ln)
				defer stop()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, 16<<10)
				buf := make([]byte, len(answer))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := io.WriteString(c, request); err != nil {
						b.Fatal(err)
					}
					n := readAnswer(b, br)
					if n != len(answer) {
						b.Fatalf("answer of %d bytes, want %d", n, len(answer))
					}
					if _, err := io.ReadFull(br, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// readAnswer reads an answer's status line and header and returns its
// Content-Length, without the allocations of http.ReadResponse.
func readAnswer(b *testing.B, br *bufio.Reader) int {
	length := -1
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if first {
			if len(line) < 12 || string(line[9:12]) != "200" {
				b.Fatalf("status line %q", line)
			}
			continue
		}
		if len(line) <= 2 {
			return length
		}
		const cl = "Content-Length: "
		if len(line) > len(cl) && strings.EqualFold(string(line[:len(cl)]), cl) {
			if length, err = strconv.Atoi(strings.TrimSpace(string(line[len(cl):]))); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkTransportStream copies streamed answers through the Transport as
// the edge does: a read, then Coalesce's question whether more has arrived
// (Arrived), and a flush when nothing has. The upstream is this package's
// Server on loopback, sending 20 events of about 250 bytes, each flushed on
// its own, as a provider's stream arrives; the copy goes to io.Discard. The
// time per answer includes the upstream's work, which is the same whatever
// the Transport does. flushes/op is the writes a proxy would make to its
// client per answer.
//
//	go test ./pkg/h1 -run '^$' -bench TransportStream -count 6
func BenchmarkTransportStream(b *testing.B) {
	event := []byte("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4\"," +
		"\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lorem ipsum dolor sit amet \"},\"finish_reason\":null}],\"usage\":null}\n\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 20 {
			w.Write(event) //nolint:errcheck // the benchmark counts what arrives
			w.(http.Flusher).Flush()
		}
	})}
	go s.Serve(ln) //nolint:errcheck // ends with Close
	defer s.Close()
	tr := New(5*time.Second, nil)
	defer tr.CloseIdleConnections()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	buf := make([]byte, 32<<10)
	var flushes int
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"stream":true}`))
		res, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		flush := NewCoalesce(res.Body)
		total := 0
		for {
			n, err := res.Body.Read(buf)
			total += n
			flush.Wrote(n)
			if err == io.EOF {
				flushes++ // what is held goes out with the answer's end
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if flush.FlushNow() {
				flushes++
			}
		}
		if total != 20*len(event) {
			b.Fatalf("%d bytes, want %d", total, 20*len(event))
		}
	}
	b.ReportMetric(float64(flushes)/float64(b.N), "flushes/op")
}
