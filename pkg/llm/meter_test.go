package llm

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// meter runs a whole stream through a new meter in one chunk.
func meter(kind Kind, estimate int64, stream string) *StreamMeter {
	m := NewStreamMeter(kind, estimate)
	m.Observe([]byte(stream))
	return m
}

func TestStreamMeter(t *testing.T) {
	pieces := words(40) // 150 bytes of text, 38 tokens at 4 bytes each
	tricky := []string{`She said "usage":{"prompt_tokens":999,"completion_tokens":999}`, " [DONE]\n", `data: {"usage":{}}` + "\n\n"}
	tests := []struct {
		name     string
		kind     Kind
		stream   string
		want     Usage
		complete bool
		done     bool
	}{
		{"openai", Chat, openAIStream(pieces, 25, 40), Usage{InputTokens: 25, OutputTokens: 40}, true, true},
		{"openai without usage", Chat, openAIStream(pieces, -1, 0),
			Usage{InputTokens: 77, OutputTokens: 38, Estimated: true}, false, true},
		{"openai cut short", Chat, openAIStream(pieces, 25, 40)[:1500],
			Usage{InputTokens: 77, OutputTokens: 4, Estimated: true}, false, false}, // 16 bytes before the cut
		{"openai text that looks like usage", Chat, openAIStream(tricky, 3, 30), Usage{InputTokens: 3, OutputTokens: 30}, true, true},
		{"openai CRLF", Chat, strings.ReplaceAll(openAIStream(pieces, 25, 40), "\n", "\r\n"), Usage{InputTokens: 25, OutputTokens: 40}, true, true},
		{"anthropic", Messages, anthropicStream(pieces, 12, 2000, 41),
			Usage{InputTokens: 2012, OutputTokens: 41, CacheReadTokens: 2000}, true, true},
		{"anthropic cut before message_delta", Messages, anthropicStream(pieces, 12, 0, -1),
			Usage{InputTokens: 12, OutputTokens: 38, Estimated: true}, false, true},
		{"anthropic cut before message_start ends", Messages, anthropicStream(pieces, 12, 0, 41)[:100],
			Usage{InputTokens: 77, Estimated: true}, false, false},
		{"completions", Completions,
			"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"\\n\\nThis is\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n" +
				"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" a test\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n" +
				"data: [DONE]\n\n",
			Usage{InputTokens: 5, OutputTokens: 5, Estimated: true}, false, true},
		{"tool calls", Chat,
			`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}` + "\n\n" +
				`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Paris, France\"}"}}]}}]}` + "\n\n",
			Usage{InputTokens: 5, OutputTokens: 8, Estimated: true}, false, false},
		{"anthropic tool input and thinking", Messages,
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San Fra\"}}\n\n" +
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think.\"}}\n\n",
			Usage{InputTokens: 5, OutputTokens: 10, Estimated: true}, false, false},
		{"anthropic text that looks like the end", Messages,
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_stop\"}}\n\n",
			Usage{InputTokens: 77, OutputTokens: 3, Estimated: true}, false, false},
		{"garbage", Chat, "data: {\"usage\":{\"prompt_tokens\":1,\ndata: [DON\n\n\x00\xff", Usage{InputTokens: 77, Estimated: true}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			estimate := int64(77)
			if strings.Contains(tt.name, "completions") || strings.Contains(tt.name, "tool") {
				estimate = 5
			}
			m := meter(tt.kind, estimate, tt.stream)
			got, complete := m.Usage()
			if got != tt.want || complete != tt.complete || m.Done() != tt.done {
				t.Errorf("Usage() = %+v, complete %v, done %v\nwant      %+v, complete %v, done %v",
					got, complete, m.Done(), tt.want, tt.complete, tt.done)
			}
			assertAnyChunking(t, tt.kind, estimate, tt.stream)
		})
	}
}

// assertAnyChunking checks that splitting the stream anywhere changes
// nothing: every split in two, and random splits into small pieces.
func assertAnyChunking(t *testing.T, kind Kind, estimate int64, stream string) {
	t.Helper()
	want, wantComplete := meter(kind, estimate, stream).Usage()
	m := NewStreamMeter(kind, estimate)
	check := func(how string) {
		t.Helper()
		if got, complete := m.Usage(); got != want || complete != wantComplete {
			t.Fatalf("%s: Usage() = %+v, %v; in one chunk %+v, %v", how, got, complete, want, wantComplete)
		}
	}
	for i := range len(stream) + 1 {
		m.Reset(kind, estimate)
		m.Observe([]byte(stream[:i]))
		m.Observe([]byte(stream[i:]))
		check("split at " + string(rune('0'+i%10)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		m.Reset(kind, estimate)
		for rest := stream; rest != ""; {
			n := min(len(rest), 1+rng.IntN(20))
			m.Observe([]byte(rest[:n]))
			rest = rest[n:]
		}
		check("random chunks")
	}
}

func TestStreamMeterLongLines(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes+10)
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"" + long + "\"}}]}\n\n" +
		"event: " + long + "\n" +
		openAIStream(words(8), 3, 8)
	m := meter(Chat, 1, stream)
	got, complete := m.Usage()
	if want := (Usage{InputTokens: 3, OutputTokens: 8}); got != want || !complete {
		t.Errorf("Usage() = %+v, %v; want %+v", got, complete, want)
	}
	// Without the usage chunk the long data line counts by its length.
	stream = stream[:strings.Index(stream, "event:")]
	got, _ = meter(Chat, 1, stream).Usage()
	if want := int64((len(stream) - 2 + 3) / 4); got.OutputTokens != want {
		t.Errorf("OutputTokens = %d, want %d", got.OutputTokens, want)
	}
	for _, at := range []int{1, 5, 100, maxLineBytes - 1, maxLineBytes, maxLineBytes + 1, len(stream) - 3} {
		m := NewStreamMeter(Chat, 1)
		m.Observe([]byte(stream[:at]))
		m.Observe([]byte(stream[at:]))
		if u, _ := m.Usage(); u != got {
			t.Errorf("split at %d: %+v, want %+v", at, u, got)
		}
	}
	if cap(m.line) > maxLineBytes {
		t.Errorf("the meter kept %d bytes of a line", cap(m.line))
	}
}

// In steady state, chunks of any size cost no allocation.
func TestStreamMeterAllocations(t *testing.T) {
	for _, stream := range []string{openAIStream(words(50), 10, 50), anthropicStream(words(50), 10, 5, 50)} {
		m := NewStreamMeter(Chat, 1)
		if stream[0] == 'e' {
			m.Reset(Messages, 1)
		}
		kind := m.kind
		data := []byte(stream)
		m.Observe(data) // grows nothing, but warm up anyway
		allocs := testing.AllocsPerRun(100, func() {
			m.Reset(kind, 1)
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 37)
				m.Observe(rest[:n])
				rest = rest[n:]
			}
			if _, complete := m.Usage(); !complete {
				t.Fatal("incomplete")
			}
		})
		if allocs != 0 {
			t.Errorf("%v stream: %.1f allocations per stream, want 0", kind, allocs)
		}
	}
}
