package mockllm

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math"
	"strconv"

	"github.com/tollgate/tollgate/pkg/llm"
)

// The answers copy OpenAI's shapes field for field (minus logprobs content
// and other details nobody meters), built by appending to a pooled buffer:
// the mock is the baseline of the load tests, so it must cost next to
// nothing per request.

func (c *call) finishReason() string {
	if c.stopped {
		return "stop"
	}
	return "length"
}

func appendOpenAIUsage(b []byte, u llm.Usage) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, u.InputTokens, 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, u.OutputTokens, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, u.TotalTokens(), 10)
	return append(b, '}')
}

// appendHead appends the fields every OpenAI answer and chunk starts with.
func appendHead(b []byte, c *call, object string) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, c.id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	return append(b, c.model...)
}

func appendChat(b []byte, c *call, usage bool) []byte {
	b = appendHead(b, c, "chat.completion")
	b = append(b, `,"choices":[`...)
	for i := range int(c.req.Choices) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"message":{"role":"assistant","content":"`...)
		b = append(b, c.text...) // words and digits: nothing to escape
		b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"`...)
		b = append(b, c.finishReason()...)
		b = append(b, `"}`...)
	}
	b = append(b, ']')
	if usage {
		b = appendOpenAIUsage(append(b, ','), c.usage)
	}
	return append(b, `,"system_fingerprint":"fp_mock"}`...)
}

func appendCompletion(b []byte, c *call, usage bool) []byte {
	b = appendHead(b, c, "text_completion")
	b = append(b, `,"choices":[`...)
	for i := range int(c.req.Choices) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"text":"`...)
		b = append(b, c.text...)
		b = append(b, `","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"logprobs":null,"finish_reason":"`...)
		b = append(b, c.finishReason()...)
		b = append(b, `"}`...)
	}
	b = append(b, ']')
	if usage {
		b = appendOpenAIUsage(append(b, ','), c.usage)
	}
	return append(b, '}')
}

// appendEmbeddings answers with one vector per input. Each vector is a
// fixed function of the body and the input's index, so the same request
// always gets the same vectors.
func appendEmbeddings(b []byte, c *call, body []byte, dims int, usage bool) []byte {
	asBase64 := wantsBase64(body)
	seed := uint64(crc32.ChecksumIEEE(body))
	raw := make([]byte, 4*dims)
	b = append(b, `{"object":"list","data":[`...)
	for i := range c.req.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		x := seed<<32 ^ uint64(i)
		if asBase64 {
			for d := range dims {
				binary.LittleEndian.PutUint32(raw[4*d:], math.Float32bits(component(&x)))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for d := range dims {
				if d > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(component(&x)), 'f', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = append(b, c.model...)
	if usage {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = strconv.AppendInt(b, c.usage.InputTokens, 10)
		b = append(b, `,"total_tokens":`...)
		b = strconv.AppendInt(b, c.usage.InputTokens, 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// component returns the next value in [-1, 1) from a splitmix64 sequence.
func component(x *uint64) float32 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40)/(1<<23) - 1
}

// wantsBase64 reports encoding_format "base64", which the official Python
// SDK asks for by default.
func wantsBase64(body []byte) bool {
	if !bytes.Contains(body, []byte(`"base64"`)) {
		return false
	}
	var r struct {
		EncodingFormat string `json:"encoding_format"`
	}
	return json.Unmarshal(body, &r) == nil && r.EncodingFormat == "base64"
}

// streamChat sends a chat answer as OpenAI streams it: a role chunk per
// choice, the pieces, a finish chunk per choice, the usage chunk when asked
// for (every chunk before it then carries "usage":null), and [DONE].
func streamChat(e *eventWriter, c *call, pieces int, includeUsage bool) {
	chunk := func(choice int, delta, finish string) bool {
		e.buf = appendHead(append(e.buf, "data: "...), c, "chat.completion.chunk")
		e.buf = append(e.buf, `,"system_fingerprint":"fp_mock","choices":[{"index":`...)
		e.buf = strconv.AppendInt(e.buf, int64(choice), 10)
		e.buf = append(e.buf, `,"delta":`...)
		e.buf = append(e.buf, delta...)
		e.buf = append(e.buf, `,"logprobs":null,"finish_reason":`...)
		e.buf = append(e.buf, finish...)
		e.buf = append(e.buf, "}]"...)
		if includeUsage {
			e.buf = append(e.buf, `,"usage":null`...)
		}
		e.buf = append(e.buf, "}\n\n"...)
		return e.send()
	}
	n := int(c.req.Choices)
	for i := range n {
		if !chunk(i, `{"role":"assistant","content":"","refusal":null}`, "null") {
			return
		}
	}
	for p := range pieces {
		delta := `{"content":"` + c.piece(p, pieces) + `"}`
		for i := range n {
			if !chunk(i, delta, "null") {
				return
			}
		}
	}
	for i := range n {
		if !chunk(i, "{}", `"`+c.finishReason()+`"`) {
			return
		}
	}
	streamEnd(e, c, includeUsage)
}

// streamCompletions sends a legacy completion as OpenAI streams it.
func streamCompletions(e *eventWriter, c *call, pieces int, includeUsage bool) {
	n := int(c.req.Choices)
	for p := range pieces {
		for i := range n {
			e.buf = appendHead(append(e.buf, "data: "...), c, "text_completion")
			e.buf = append(e.buf, `,"choices":[{"text":"`...)
			e.buf = append(e.buf, c.piece(p, pieces)...)
			e.buf = append(e.buf, `","index":`...)
			e.buf = strconv.AppendInt(e.buf, int64(i), 10)
			e.buf = append(e.buf, `,"logprobs":null,"finish_reason":`...)
			if p == pieces-1 {
				e.buf = append(e.buf, `"`+c.finishReason()+`"`...)
			} else {
				e.buf = append(e.buf, "null"...)
			}
			e.buf = append(e.buf, "}]"...)
			if includeUsage {
				e.buf = append(e.buf, `,"usage":null`...)
			}
			e.buf = append(e.buf, "}\n\n"...)
			if !e.send() {
				return
			}
		}
	}
	streamEnd(e, c, includeUsage)
}

// streamEnd sends the usage chunk (choices empty, as OpenAI's is) and [DONE].
func streamEnd(e *eventWriter, c *call, includeUsage bool) {
	e.closing()
	if includeUsage {
		object := "chat.completion.chunk"
		if c.kind == llm.Completions {
			object = "text_completion"
		}
		e.buf = appendHead(append(e.buf, "data: "...), c, object)
		e.buf = append(e.buf, `,"choices":[],`...)
		e.buf = appendOpenAIUsage(e.buf, c.usage)
		e.buf = append(e.buf, "}\n\n"...)
		if !e.send() {
			return
		}
	}
	e.buf = append(e.buf, "data: [DONE]\n\n"...)
	e.send()
}
