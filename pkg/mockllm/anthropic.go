package mockllm

import "strconv"

// Anthropic's Messages API shapes, field for field.

func (c *call) stopReason() string {
	if c.stopped {
		return "end_turn"
	}
	return "max_tokens"
}

func appendMessage(b []byte, c *call, usage bool) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, c.id...)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, c.model...)
	b = append(b, `,"content":[{"type":"text","text":"`...)
	b = append(b, c.text...)
	b = append(b, `"}],"stop_reason":"`...)
	b = append(b, c.stopReason()...)
	b = append(b, `","stop_sequence":null`...)
	if usage {
		b = append(b, `,"usage":{"input_tokens":`...)
		b = strconv.AppendInt(b, c.usage.InputTokens, 10)
		b = append(b, `,"output_tokens":`...)
		b = strconv.AppendInt(b, c.usage.OutputTokens, 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// streamMessages sends a reply as Anthropic streams it: message_start (with
// the input tokens), one text block in pieces, a ping, message_delta (with
// the final output tokens) and message_stop.
func streamMessages(e *eventWriter, c *call, pieces int, usage bool) {
	event := func(name string) {
		e.buf = append(e.buf, "event: "...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, "\ndata: "...)
	}
	event("message_start")
	e.buf = append(e.buf, `{"type":"message_start","message":{"id":"`...)
	e.buf = append(e.buf, c.id...)
	e.buf = append(e.buf, `","type":"message","role":"assistant","model":`...)
	e.buf = append(e.buf, c.model...)
	e.buf = append(e.buf, `,"content":[],"stop_reason":null,"stop_sequence":null`...)
	if usage {
		// Anthropic counts the first output token here already.
		e.buf = append(e.buf, `,"usage":{"input_tokens":`...)
		e.buf = strconv.AppendInt(e.buf, c.usage.InputTokens, 10)
		e.buf = append(e.buf, `,"output_tokens":1}`...)
	}
	e.buf = append(e.buf, "}}\n\n"...)
	if !e.send() {
		return
	}
	event("content_block_start")
	e.buf = append(e.buf, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`+"\n\n"...)
	if !e.send() {
		return
	}
	event("ping")
	e.buf = append(e.buf, `{"type": "ping"}`+"\n\n"...)
	if !e.send() {
		return
	}
	for p := range pieces {
		event("content_block_delta")
		e.buf = append(e.buf, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`...)
		e.buf = append(e.buf, c.piece(p, pieces)...)
		e.buf = append(e.buf, `"}}`+"\n\n"...)
		if !e.send() {
			return
		}
	}
	event("content_block_stop")
	e.buf = append(e.buf, `{"type":"content_block_stop","index":0}`+"\n\n"...)
	if !e.send() {
		return
	}
	e.closing()
	event("message_delta")
	e.buf = append(e.buf, `{"type":"message_delta","delta":{"stop_reason":"`...)
	e.buf = append(e.buf, c.stopReason()...)
	e.buf = append(e.buf, `","stop_sequence":null}`...)
	if usage {
		e.buf = append(e.buf, `,"usage":{"output_tokens":`...)
		e.buf = strconv.AppendInt(e.buf, c.usage.OutputTokens, 10)
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, "}\n\n"...)
	if !e.send() {
		return
	}
	event("message_stop")
	e.buf = append(e.buf, `{"type":"message_stop"}`+"\n\n"...)
	e.send()
}
