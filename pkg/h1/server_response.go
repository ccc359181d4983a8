package h1

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// bufferLimit is how much of an answer is held back, until the handler
// flushes or returns, so that it can go out with a Content-Length and in
// one write; a longer one is sent chunked.
const bufferLimit = 64 << 10

var answerPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// response is the http.ResponseWriter of a request on an sconn.
type response struct {
	c           *sconn
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool
	sent        bool  // the status line and header are in c.bw
	chunked     bool  // the body goes out chunked
	declared    int64 // the handler's Content-Length, -1 if none
	written     int64
	buf         *[]byte // the body held back (bufferLimit) until sent
	closeAfter  bool    // the header said Connection: close
	err         error   // the first failed write: the client is gone
}

func (w *response) reset(req *http.Request) {
	if w.header == nil {
		w.header = make(http.Header, 8)
	} else {
		clear(w.header)
	}
	*w = response{c: w.c, req: req, header: w.header, declared: -1}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return // as net/http, but it logs: "superfluous WriteHeader call"
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once, with the header so far
		// (103 Early Hints).
		w.writeStatusAndHeader(code)
		w.c.bw.WriteString("\r\n") //nolint:errcheck // a failed write fails the flush
		if err := w.c.bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	} else if len(cl) > 1 {
		delete(w.header, "Content-Length")
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.sent {
		if w.buf == nil {
			w.buf = answerPool.Get().(*[]byte)
		}
		if len(*w.buf)+len(p) <= bufferLimit {
			*w.buf = append(*w.buf, p...)
			return len(p), nil
		}
		w.send(false)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends what was written so far.
func (w *response) Flush() { w.FlushError() } //nolint:errcheck // http.Flusher has no error

// FlushError sends what was written so far (http.ResponseController).
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.send(false)
	}
	if err := w.c.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

// send writes the status line, the header and the body held back; final
// says the handler has returned, so the length of the body is known. The
// framing headers (Content-Length, Transfer-Encoding, Connection) are this
// writer's: the handler's Content-Length is kept if it is valid, its
// Connection: close honoured, and the rest of them dropped.
func (w *response) send(final bool) {
	w.sent = true
	h := w.header
	held := 0
	if w.buf != nil {
		held = len(*w.buf)
	}
	length := int64(-1)
	switch {
	case !bodyAllowed(w.status):
		if w.status == http.StatusNotModified {
			length = w.declared
		}
	case w.declared >= 0:
		length = w.declared
	case final && (w.req.Method != http.MethodHead || w.written > 0):
		length = w.written
	case w.req.Method == http.MethodHead: // no body follows, nor its length
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
	default: // HTTP/1.0 and a length not known: the close ends the body
		w.closeAfter = true
	}
	if _, ok := h["Content-Type"]; !ok && held > 0 && bodyAllowed(w.status) {
		h["Content-Type"] = []string{http.DetectContentType((*w.buf)[:min(held, 512)])}
	}
	if v := h["Connection"]; len(v) > 0 && hasToken(v, "close") || w.c.s.shutdown.Load() {
		w.closeAfter = true
	}
	w.writeStatusAndHeader(w.status)
	bw := w.c.bw
	if length >= 0 {
		bw.WriteString("Content-Length: ")                            //nolint:errcheck // a failed write fails the flush
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), length, 10)) //nolint:errcheck
		bw.WriteString("\r\n")                                        //nolint:errcheck
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n") //nolint:errcheck
	}
	switch {
	case w.closeAfter || w.req.Close:
		bw.WriteString("Connection: close\r\n") //nolint:errcheck
	case !w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n") //nolint:errcheck
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ") //nolint:errcheck
		bw.Write(w.c.httpDate()) //nolint:errcheck
		bw.WriteString("\r\n")   //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	if held > 0 {
		w.writeBody(*w.buf)
	}
	w.release()
}

// writeBody writes p as the body goes: chunked or as it is.
func (w *response) writeBody(p []byte) {
	if len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		// AvailableBuffer: the size is formatted into the writer's own
		// buffer, with no allocation per chunk.
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16)) //nolint:errcheck // checked below
		bw.WriteString("\r\n")                                               //nolint:errcheck
		bw.Write(p)                                                          //nolint:errcheck
		_, err := bw.WriteString("\r\n")
		if err != nil {
			w.err = err
		}
		return
	}
	if _, err := bw.Write(p); err != nil {
		w.err = err
	}
}

// finish completes the answer after the handler has returned, and reports
// whether the connection can carry another request.
func (w *response) finish(keep bool) bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !keep {
		w.closeAfter = true
	}
	if !w.sent {
		w.send(true)
	} else if w.chunked && w.err == nil {
		w.c.bw.WriteString("0\r\n\r\n") //nolint:errcheck // a failed write fails the flush
	}
	if err := w.c.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
	if w.declared >= 0 && w.written < w.declared && bodyAllowed(w.status) && w.req.Method != http.MethodHead {
		return false // the client waits for bytes that will not come: only the close tells it
	}
	return w.err == nil && !w.closeAfter && !w.req.Close
}

// release returns the held-back body's buffer.
func (w *response) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		if cap(*w.buf) <= bufferLimit+4<<10 {
			answerPool.Put(w.buf)
		}
		w.buf = nil
	}
}

// writeStatusAndHeader writes the status line and the header fields, sorted
// by name; names that are not valid are left out and line breaks in values
// become spaces, as net/http does.
func (w *response) writeStatusAndHeader(code int) {
	bw := w.c.bw
	if w.req.ProtoAtLeast(1, 1) {
		bw.WriteString("HTTP/1.1 ") //nolint:errcheck // a failed write fails the flush
	} else {
		bw.WriteString("HTTP/1.0 ") //nolint:errcheck
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10)) //nolint:errcheck
	bw.WriteByte(' ')                                                  //nolint:errcheck
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text) //nolint:errcheck
	} else {
		bw.WriteString("status code ")                                     //nolint:errcheck
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10)) //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	keys := w.c.keys[:0]
	for k := range w.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) || framingHeader(k) {
			continue
		}
		for _, v := range w.header[k] {
			bw.WriteString(k)    //nolint:errcheck
			bw.WriteString(": ") //nolint:errcheck
			writeHeaderValue(bw, v)
			bw.WriteString("\r\n") //nolint:errcheck
		}
	}
	clear(keys)
	w.c.keys = keys[:0]
}

// framingHeader reports whether the writer, not the handler, sends the
// header named k.
func framingHeader(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Trailer":
		return true
	}
	return false
}

// writeHeaderValue writes v trimmed, with CR and LF as spaces.
func writeHeaderValue(bw *writeBuffer, v string) {
	v = strings.Trim(v, " \t")
	if strings.IndexAny(v, "\r\n") < 0 {
		bw.WriteString(v) //nolint:errcheck // a failed write fails the flush
		return
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b == '\r' || b == '\n' {
			b = ' '
		}
		bw.WriteByte(b) //nolint:errcheck
	}
}

// hasToken reports whether a comma-separated header value lists token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// expectsContinue reports whether an Expect header asks for 100 Continue,
// as net/http's server decides it (its hasToken): "100-continue" anywhere in
// the first value, in any case, between spaces, tabs, commas or the ends.
// (FuzzServerRequest found "100-Continue 000", which net/http takes.)
func expectsContinue(v string) bool {
	const token = "100-continue"
	boundary := func(b byte) bool { return b == ' ' || b == ',' || b == '\t' }
	for sp := 0; sp+len(token) <= len(v); sp++ {
		end := sp + len(token)
		if (sp == 0 || boundary(v[sp-1])) && (end == len(v) || boundary(v[end])) && strings.EqualFold(v[sp:end], token) {
			return true
		}
	}
	return false
}

func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}
