package llm

import (
	"fmt"
	"strings"
)

// Realistic request bodies and streams, shared by the table tests, the fuzz
// seeds and the benchmarks. The streams copy the shape of what OpenAI and
// Anthropic send, field for field.

const lorem = "The quick brown fox jumps over the lazy dog, and then explains at some length why it did so. "

// chatBody builds a chat request of about size bytes: a system prompt and
// alternating turns.
func chatBody(size int, extra string) string {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."}`)
	for turn := 0; b.Len() < size-200; turn++ {
		role := "user"
		if turn%2 == 1 {
			role = "assistant"
		}
		n := min(8, max(1, (size-b.Len()-200)/len(lorem)))
		fmt.Fprintf(&b, `,{"role":%q,"content":"turn %d: %s"}`, role, turn, strings.Repeat(lorem, n))
	}
	b.WriteString(`],"temperature":0.7,"max_tokens":512` + extra + `}`)
	return b.String()
}

var (
	chat2K   = chatBody(2<<10, "")
	chat100K = chatBody(100<<10, `,"stream":true`)
)

const chatParts = `{
  "model": "gpt-4o",
  "messages": [
    {"role": "developer", "content": [{"type": "text", "text": "Answer briefly."}]},
    {"role": "user", "content": [
      {"type": "text", "text": "What is in this image?"},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "detail": "high"}}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18\u00b0C and sunny"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
  "max_completion_tokens": 300,
  "n": 2,
  "stream": true,
  "stream_options": {"include_usage": false, "continuous_usage_stats": false}
}`

const messagesBody = `{"model":"claude-3-5-sonnet-latest","max_tokens":1024,
"system":[{"type":"text","text":"You are a terse assistant.","cache_control":{"type":"ephemeral"}}],
"messages":[
 {"role":"user","content":"Hello, Claude"},
 {"role":"assistant","content":[{"type":"text","text":"Hello!"},{"type":"tool_use","id":"toolu_01","name":"lookup","input":{"q":"weather"}}]},
 {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"sunny"},
  {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"}}]}],
"tools":[{"name":"lookup","description":"Look something up","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
"stream":true,"temperature":0.2}`

const (
	completionsBody = `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"n":2,"best_of":3,"stream":false,"suffix":"!"}`
	embeddingsBody  = `{"model":"text-embedding-3-small","input":["The food was delicious","and the waiter was kind"],"encoding_format":"float"}`
	embeddingsIDs   = `{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]}`
)

// openAIStream is a chat stream as OpenAI sends it with include_usage: a role
// chunk, one chunk per piece, a finish chunk, the usage chunk and [DONE].
func openAIStream(pieces []string, prompt, completion int) string {
	const head = `data: {"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0aa8d3e20b","choices":[`
	var b strings.Builder
	b.WriteString(head + `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n")
	for _, p := range pieces {
		fmt.Fprintf(&b, "%s{\"index\":0,\"delta\":{\"content\":%s},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", head, quote(p))
	}
	b.WriteString(head + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n")
	if prompt >= 0 {
		fmt.Fprintf(&b, "%s],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
			head, prompt, completion, prompt+completion)
	}
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

// anthropicStream is a Messages stream as Anthropic sends it.
func anthropicStream(pieces []string, input, cacheRead, output int) string {
	var b strings.Builder
	event := func(name, data string) { fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", name, data) }
	event("message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":%d,"output_tokens":1}}}`, input, cacheRead))
	event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	event("ping", `{"type": "ping"}`)
	for _, p := range pieces {
		event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+quote(p)+`}}`)
	}
	event("content_block_stop", `{"type":"content_block_stop","index":0}`)
	if output >= 0 {
		event("message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":%d}}`, output))
	}
	event("message_stop", `{"type":"message_stop"}`)
	return b.String()
}

func quote(s string) string { return string(appendString(nil, s)) }

// words splits a reply into stream pieces of about one token each.
func words(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = []string{"Hello", " there", ",", " how", " can", " I", " help", "?\n"}[i%8]
	}
	return out
}
