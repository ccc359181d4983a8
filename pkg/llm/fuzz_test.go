package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seeds are kept under about a kilobyte: the fuzzer minimises every input
// that finds new coverage, at a cost that grows with the square of its size,
// and with multi-kilobyte seeds a 15-second run spends its time minimising.

// FuzzScanner checks that the scanner and encoding/json agree on what is
// valid JSON.
func FuzzScanner(f *testing.F) {
	for _, s := range scannerSeeds() {
		if len(s) < 1500 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := scanner{data: data}
		s.skip()
		s.end()
		if got, want := !s.failed(), json.Valid(data); got != want {
			t.Fatalf("%q: scanner says valid=%v (%v), encoding/json says %v", data, got, s.err(), want)
		}
	})
}

func FuzzChatRequest(f *testing.F) {
	fuzzRequest(f, Chat, chatBody(600, `,"stream":true`), chatParts, `{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"o3","max_completion_tokens":100,"n":3,"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAA=","format":"wav"}}]}]}`,
		`{"model":"m","model":"n"}`, `{"model":null,"max_tokens":1e2}`, `{"mod\u0065l":"\ud83d\ude00"}`)
}

func FuzzCompletionsRequest(f *testing.F) {
	fuzzRequest(f, Completions, completionsBody, `{"model":"m","prompt":[[1,2],[3]],"stream":true}`,
		`{"model":"davinci-002","prompt":["a","b"],"best_of":5,"n":2,"max_tokens":16,"echo":true,"logprobs":2}`,
		`{"model":"m","prompt":null,"suffix":null,"stream_options":{}}`)
}

func FuzzEmbeddingsRequest(f *testing.F) {
	fuzzRequest(f, Embeddings, embeddingsBody, embeddingsIDs, `{"model":"m","input":"one","dimensions":256,"user":"u-1"}`,
		`{"model":"m","input":[]}`, `{"input":"no model"}`)
}

func FuzzMessagesRequest(f *testing.F) {
	fuzzRequest(f, Messages, messagesBody, `{"model":"claude-3-haiku","max_tokens":10,"system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}`,
		`{"model":"claude","max_tokens":8192,"thinking":{"type":"enabled","budget_tokens":4096},"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}}]}]}`,
		`{"model":"claude","messages":[]}`)
}

// fuzzRequest checks ParseRequest against encoding/json: it never panics,
// rejects everything encoding/json rejects, and what it reads is what
// encoding/json reads.
func fuzzRequest(f *testing.F, kind Kind, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(kind, body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) || re.Message == "" {
				t.Fatalf("error %v (%T) is not a *RequestError with a message", err, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if r.Kind != kind || r.Model == "" || len(r.Model) > MaxModelBytes ||
			r.MaxTokens < 0 || r.MaxTokens > MaxTokensLimit || r.Choices < 1 || r.Choices > MaxChoices ||
			r.Items < 0 || r.InputTokensEstimate < 0 || kind == Messages && r.MaxTokens == 0 {
			t.Fatalf("out of range: %+v", r)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted a body encoding/json cannot read as an object: %v", err)
		}
		var model string
		if json.Unmarshal(m["model"], &model) != nil || utf8.ValidString(r.Model) && model != r.Model {
			t.Fatalf("model %q, encoding/json reads %s", r.Model, m["model"])
		}
		if kind != Embeddings {
			var stream *bool
			json.Unmarshal(m["stream"], &stream) //nolint:errcheck // checked by the comparison
			if (stream != nil && *stream) != r.Stream {
				t.Fatalf("stream %v, encoding/json reads %s", r.Stream, m["stream"])
			}
			var maxTokens *int64
			json.Unmarshal(m["max_tokens"], &maxTokens) //nolint:errcheck // checked by the comparison
			if maxTokens != nil && *maxTokens > r.MaxTokens {
				t.Fatalf("MaxTokens %d, encoding/json reads %s", r.MaxTokens, m["max_tokens"])
			}
		}
	})
}

func FuzzWithIncludeUsage(f *testing.F) {
	for _, s := range []string{chatBody(600, ""), chatParts, `{}`, `{"stream_options":null}`, `{"stream_options":{"include_usage":false,"x":1}}`,
		`{"stream_options":{"a":1},"stream_options":{"include_usage":true}}`, `{"stream\u005foptions":{}}`, `[]`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in := bytes.Clone(body)
		out, err := WithIncludeUsage(body)
		if !bytes.Equal(in, body) {
			t.Fatal("WithIncludeUsage changed its input")
		}
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T) is not a *RequestError", err, err)
			}
			return
		}
		before, after := decodeObject(t, body), decodeObject(t, out)
		opts, ok := after["stream_options"].(map[string]any)
		if !ok || opts["include_usage"] != true {
			t.Fatalf("%s -> %s: include_usage is not true", body, out)
		}
		oldOpts, _ := before["stream_options"].(map[string]any)
		delete(opts, "include_usage")
		delete(oldOpts, "include_usage")
		if len(oldOpts) == 0 && len(opts) == 0 {
			oldOpts, opts = nil, nil
		}
		delete(before, "stream_options")
		delete(after, "stream_options")
		if !reflect.DeepEqual(before, after) || !reflect.DeepEqual(oldOpts, opts) {
			t.Fatalf("%s -> %s changed more than include_usage", body, out)
		}
	})
}

func decodeObject(t *testing.T, data []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		t.Fatalf("%q is not a JSON object: %v", data, err)
	}
	return m
}

// FuzzStreamMeter checks that no input makes the meter panic and that how a
// stream is cut into chunks never changes what it reads.
func FuzzStreamMeter(f *testing.F) {
	for _, s := range []string{
		openAIStream(words(1), 10, 12), openAIStream(nil, -1, 0),
		anthropicStream(words(2), 10, 3, 12), anthropicStream(nil, 7, 0, -1)[:400],
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		"data: {\"choices\":[{\"text\":\"hi\"}]}\r\n\r\ndata: [DONE]\r\n\r\n",
		"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
		"data: {\"usage\":{\"prompt_tokens\":1,\n", ": keep-alive\n\nretry: 10\n",
		// Counters whose sum overflows int64 (Anthropic's input is three of them).
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9223372036854775807,\"cache_read_input_tokens\":9223372036854775807,\"output_tokens\":1}}}\n\n",
	} {
		for kind := range uint8(4) {
			f.Add([]byte(s), uint64(len(s)), kind)
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64, k uint8) {
		kind := Kind(k%4 + 1)
		whole := NewStreamMeter(kind, 9)
		whole.Observe(stream)
		want, wantComplete := whole.Usage()
		if want.InputTokens < 0 || want.OutputTokens < 0 || wantComplete == want.Estimated {
			t.Fatalf("Usage() = %+v, complete %v", want, wantComplete)
		}
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		m := NewStreamMeter(kind, 9)
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), rng.IntN(64)+1)
			m.Observe(rest[:n])
			rest = rest[n:]
		}
		got, complete := m.Usage()
		if got != want || complete != wantComplete || m.Done() != whole.Done() {
			t.Fatalf("in chunks: %+v, %v, done %v; whole: %+v, %v, done %v\nstream %q",
				got, complete, m.Done(), want, wantComplete, whole.Done(), strings.Clone(string(stream)))
		}
	})
}

// usageAnswers are non-streamed upstream answers, as OpenAI's chat,
// completions and embeddings endpoints and Anthropic's messages send them.
var usageAnswers = []string{
	`{"id":"chatcmpl-1","object":"chat.completion","created":1718000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi, \"usage\": {}","refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4}},"system_fingerprint":"fp_0aa8d3e20b"}`,
	`{"id":"cmpl-1","object":"text_completion","created":1718000000,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"ok","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
	`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,1e-3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`,
	`{"id":"msg_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":2095,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":503}}`,
	`{"usage":{"total_tokens":3}}`,
	`{"usage":{"prompt_tokens":5,"total_tokens":12}}`,
	`{"usage":{"input_tokens":9223372036854775807,"cache_creation_input_tokens":9223372036854775807,"cache_read_input_tokens":1,"output_tokens":9223372036854775807}}`,
	`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807,"total_tokens":1}}`,
	`{"usage":{"prompt_tokens":-1,"completion_tokens":1.5,"total_tokens":"2","prompt_tokens_details":null}}`,
	`{"usage":{"prompt_tokens":null,"completion_tokens":null}}`,
	`{"usage":{"prompt\u005ftokens":1,"completion_tokens":2},"usage":{"input_tokens":3}}`,
	`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
	`{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`,
	`{"usage":null}`, `[]`, `null`, ``, `{`, `{"usage":{`, `{"usage":{"prompt_tokens":5,"completion_tokens":6}`,
}

// FuzzParseUsage feeds arbitrary bytes to ParseUsage as the answer of each
// kind: it never panics, reads no negative count, accepts only valid JSON,
// and returns the zero Usage when it returns !ok.
func FuzzParseUsage(f *testing.F) {
	for _, s := range usageAnswers {
		f.Add([]byte(s), uint8(0))
		// Truncated and garbled variants of the real answers.
		for _, cut := range []int{len(s) / 2, len(s) - 1, len(s) - 2} {
			if cut > 0 && cut < len(s) {
				f.Add([]byte(s[:cut]), uint8(1))
			}
		}
		if i := strings.Index(s, `"usage"`); i >= 0 {
			f.Add([]byte(s[:i]+`"usage":{"prompt_tokens":1e3,`+s[i+8:]), uint8(2))
			f.Add([]byte(s[i:]), uint8(3))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, _ uint8) {
		in := bytes.Clone(body)
		for _, kind := range []Kind{Other, Chat, Completions, Embeddings, Messages, Messages + 1} {
			u, ok := ParseUsage(kind, body)
			if !bytes.Equal(in, body) {
				t.Fatal("ParseUsage changed its input")
			}
			if !ok {
				if u != (Usage{}) {
					t.Fatalf("%v: !ok with %+v", kind, u)
				}
				continue
			}
			if u.InputTokens < 0 || u.OutputTokens < 0 || u.CacheReadTokens < 0 || u.CacheWriteTokens < 0 || u.TotalTokens() < 0 || u.Estimated {
				t.Fatalf("%v: %q: %+v", kind, body, u)
			}
			if !json.Valid(body) {
				t.Fatalf("%v: usage %+v read from invalid JSON %q", kind, u, body)
			}
		}
	})
}
