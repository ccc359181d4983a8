package mockllm

import (
	"context"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/pkg/llm"
)

// serveLLM answers POST /v1/chat/completions, /v1/completions,
// /v1/embeddings and /v1/messages.
func (h *Handler) serveLLM(w http.ResponseWriter, r *http.Request, kind llm.Kind, body []byte, ctl controls) {
	c, err := h.newCall(kind, body)
	if err != nil {
		llm.WriteError(w, kind, http.StatusBadRequest, "", err.Error())
		return
	}
	omit := ctl.omitUsage

	if c.req.Stream && kind != llm.Embeddings {
		e := newEventWriter(w, r.Context(), ctl)
		switch kind {
		case llm.Chat:
			streamChat(e, c, c.pieces(ctl.chunks), c.req.IncludeUsage && !omit)
		case llm.Completions:
			streamCompletions(e, c, c.pieces(ctl.chunks), c.req.IncludeUsage && !omit)
		default:
			streamMessages(e, c, c.pieces(ctl.chunks), !omit)
		}
		e.release()
		return
	}

	out := bufs.Get().(*[]byte)
	defer putBuf(out)
	b := (*out)[:0]
	switch kind {
	case llm.Chat:
		b = appendChat(b, c, !omit)
	case llm.Completions:
		b = appendCompletion(b, c, !omit)
	case llm.Embeddings:
		b = appendEmbeddings(b, c, body, h.opts.EmbeddingDims, !omit)
	default:
		b = appendMessage(b, c, !omit)
	}
	*out = b[:0]
	writeBody(w, http.StatusOK, "application/json", b, ctl.breakAfter)
}

// eventWriter sends server-sent events one at a time, each flushed at once
// as providers do, with the control headers' delay between generated events
// and break.
type eventWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	ctx   context.Context
	delay time.Duration
	// left is how many more events may be sent before the connection is
	// dropped (X-Mock-Break-After); -1 for no break.
	left int
	sent int
	bufp *[]byte
	buf  []byte // the event being built
	ok   bool   // false once the client is gone
}

func newEventWriter(w http.ResponseWriter, ctx context.Context, ctl controls) *eventWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	e := &eventWriter{w: w, rc: http.NewResponseController(w), ctx: ctx, delay: ctl.chunkDelay,
		left: ctl.breakAfter, bufp: bufs.Get().(*[]byte), ok: true}
	e.buf = (*e.bufp)[:0]
	// Send the headers now: a client sees the stream start before the
	// first event, and a break after 0 events is a stream that started.
	e.ok = e.rc.Flush() == nil
	return e
}

// send writes the event in e.buf and flushes it. It reports whether the
// stream goes on; after false every call is a no-op.
func (e *eventWriter) send() bool {
	event := e.buf
	e.buf = e.buf[:0]
	if !e.ok {
		return false
	}
	if e.sent > 0 && !sleep(e.ctx, e.delay) {
		e.ok = false
		return false
	}
	if e.left == 0 {
		e.abort()
	}
	if _, err := e.w.Write(event); err != nil {
		e.ok = false
		return false
	}
	e.ok = e.rc.Flush() == nil
	e.sent++
	if e.left > 0 {
		e.left--
	}
	return e.ok
}

// closing is called before the events that report usage and end the
// stream: a requested break happens here at the latest, so a broken stream
// never carries its final usage. Those events follow the last generated one
// at once, with no chunk delay, as providers send them: the delay stands
// for generating tokens, and a stream whose usage came a delay later would
// make a proxy that asks for usage on the client's behalf look slower by
// that delay.
func (e *eventWriter) closing() {
	if e.ok && e.left >= 0 {
		e.abort()
	}
	e.delay = 0
}

// abort drops the connection the way a dying upstream does: net/http closes
// it without ending the chunked body, so the client sees an unexpected EOF.
func (e *eventWriter) abort() {
	e.release()
	panic(http.ErrAbortHandler)
}

// release gives the event buffer back to the pool.
func (e *eventWriter) release() {
	*e.bufp = e.buf[:0]
	putBuf(e.bufp)
}
