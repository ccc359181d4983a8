package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		body string
		want Request
	}{
		{"chat minimal", Chat, `{"model":"gpt-4o","messages":[{"role":"user","content":"Hello, world"}]}`,
			// "user" (4) + "Hello, world" (12) = 16 bytes
			Request{Model: "gpt-4o", Choices: 1, Items: 1, InputTokensEstimate: 4}},
		{"chat parts, image, tools", Chat, chatParts,
			Request{Model: "gpt-4o", MaxTokens: 300, Choices: 2, Stream: true, Items: 4,
				// 204 bytes of strings in messages and tools, one image.
				InputTokensEstimate: 51 + 1000}},
		{"chat both max fields", Chat, `{"model":"m","max_tokens":10,"max_completion_tokens":20}`,
			Request{Model: "m", MaxTokens: 20, Choices: 1}},
		{"chat null fields are absent", Chat,
			`{"model":"m","max_tokens":null,"stream":null,"stream_options":null,"n":null,"messages":null}`,
			Request{Model: "m", Choices: 1}},
		{"chat include_usage", Chat, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			Request{Model: "m", Choices: 1, Stream: true, IncludeUsage: true}},
		{"escaped key and model", Chat, `{"mod\u0065l":"gpt-\u0034o","max_tokens":5}`,
			Request{Model: "gpt-4o", MaxTokens: 5, Choices: 1}},
		{"whitespace everywhere", Chat, " \n{ \"model\" : \"m\" ,\t\"stream\" : true } \r\n",
			Request{Model: "m", Choices: 1, Stream: true}},
		{"case matters", Chat, `{"model":"m","Model":"other","MAX_TOKENS":"x"}`,
			Request{Model: "m", Choices: 1}},
		{"completions", Completions, completionsBody,
			// "Say this is a test" (18) + "!" (1)
			Request{Model: "gpt-3.5-turbo-instruct", MaxTokens: 7, Choices: 3, Items: 1, InputTokensEstimate: 5}},
		{"completions token ids", Completions, `{"model":"m","prompt":[1,2,3,4,5]}`,
			Request{Model: "m", Choices: 1, Items: 1, InputTokensEstimate: 5}},
		{"completions prompts", Completions, `{"model":"m","prompt":["abcd","efgh","ij"]}`,
			Request{Model: "m", Choices: 1, Items: 3, InputTokensEstimate: 3}},
		{"embeddings", Embeddings, embeddingsBody,
			// 22 + 23 bytes
			Request{Model: "text-embedding-3-small", Choices: 1, Items: 2, InputTokensEstimate: 12}},
		{"embeddings token arrays", Embeddings, embeddingsIDs,
			Request{Model: "text-embedding-3-small", Choices: 1, Items: 2, InputTokensEstimate: 5}},
		{"embeddings ignore max_tokens", Embeddings, `{"model":"m","input":"x","max_tokens":"lots","stream":7}`,
			Request{Model: "m", Choices: 1, Items: 1, InputTokensEstimate: 1}},
		{"messages", Messages, messagesBody,
			Request{Model: "claude-3-5-sonnet-latest", MaxTokens: 1024, Choices: 1, Stream: true, Items: 3,
				// 187 bytes of strings, one image.
				InputTokensEstimate: 47 + 1000}},
		{"messages ignore stream_options and n", Messages, `{"model":"c","max_tokens":1,"stream_options":1,"n":0}`,
			Request{Model: "c", MaxTokens: 1, Choices: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Kind = tt.kind
			got, err := ParseRequest(tt.kind, []byte(tt.body))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name      string
		kind      Kind
		body      string
		param     string
		wantError string
	}{
		{"empty", Chat, "", "", "the body is empty; send a JSON object"},
		{"blank", Chat, " \n", "", "the body is empty; send a JSON object"},
		{"array", Chat, `[1]`, "", "the body must be a JSON object"},
		{"not json", Chat, `model=gpt-4`, "", "the body is not valid JSON: invalid character 'm' looking for beginning of value at offset 0"},
		{"truncated", Chat, `{"model":"gpt-4","messages":[{"role":"user"`, "", "the body is not valid JSON: unexpected end of JSON input"},
		{"trailing comma", Chat, `{"model":"m",}`, "", "the body is not valid JSON: invalid character '}' looking for beginning of object key string at offset 13"},
		{"trailing data", Chat, `{"model":"m"} {}`, "", "the body is not valid JSON: invalid character '{' after top-level value at offset 14"},
		{"bad escape", Chat, `{"model":"a\x"}`, "", "the body is not valid JSON: invalid character 'x' in string escape code at offset 12"},
		{"control char", Chat, "{\"model\":\"a\nb\"}", "", `the body is not valid JSON: invalid character '\n' in string literal at offset 11`},
		{"invalid later", Chat, `{"model":"m","messages":[}`, "", "the body is not valid JSON: invalid character '}' looking for beginning of value at offset 25"},
		{"no model", Chat, `{"messages":[]}`, "model", `"model" is required`},
		{"empty model", Embeddings, `{"model":"","input":"x"}`, "model", `"model" is required`},
		{"model number", Chat, `{"model":4}`, "model", `"model" must be a string`},
		{"model too long", Chat, `{"model":"` + strings.Repeat("m", 257) + `"}`, "model", `"model" must be at most 256 bytes`},
		{"two models", Chat, `{"model":"cheap","messages":[],"model":"expensive"}`, "model", `"model" appears more than once`},
		{"max_tokens zero", Chat, `{"model":"m","max_tokens":0}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens negative", Chat, `{"model":"m","max_tokens":-5}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens fraction", Chat, `{"model":"m","max_tokens":1.5}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens exponent", Chat, `{"model":"m","max_tokens":1e3}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens string", Chat, `{"model":"m","max_tokens":"100"}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens huge", Chat, `{"model":"m","max_tokens":99999999999999999999999}`, "max_tokens", `"max_tokens" must be a positive integer`},
		{"max_tokens too big", Chat, `{"model":"m","max_tokens":1000000001}`, "max_tokens", `"max_tokens" must be at most 1000000000`},
		{"max_completion_tokens", Chat, `{"model":"m","max_completion_tokens":true}`, "max_completion_tokens", `"max_completion_tokens" must be a positive integer`},
		{"n too big", Chat, `{"model":"m","n":129}`, "n", `"n" must be at most 128`},
		{"stream string", Chat, `{"model":"m","stream":"true"}`, "stream", `"stream" must be true or false`},
		{"stream_options string", Completions, `{"model":"m","stream_options":"usage"}`, "stream_options", `"stream_options" must be an object`},
		{"include_usage string", Chat, `{"model":"m","stream_options":{"include_usage":"yes"}}`, "stream_options", `"stream_options.include_usage" must be true or false`},
		{"anthropic needs max_tokens", Messages, `{"model":"claude","messages":[]}`, "max_tokens", `"max_tokens" is required`},
		{"anthropic null max_tokens", Messages, `{"model":"claude","max_tokens":null}`, "max_tokens", `"max_tokens" is required`},
		{"too deep", Chat, `{"model":"m","messages":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, "", "the body is not valid JSON: exceeded max depth at offset 10024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest(tt.kind, []byte(tt.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T), want a *RequestError", err, err)
			}
			if re.Message != tt.wantError || re.Param != tt.param {
				t.Errorf("error %q (param %q)\nwant  %q (param %q)", re.Message, re.Param, tt.wantError, tt.param)
			}
		})
	}
	if _, err := ParseRequest(Other, []byte(`{}`)); err == nil {
		t.Error("ParseRequest(Other) did not fail")
	}
}

// The scanner must call valid exactly what encoding/json calls valid.
func TestScannerAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range scannerSeeds() {
		s := scanner{data: []byte(in)}
		s.skip()
		s.end()
		if got, want := !s.failed(), json.Valid([]byte(in)); got != want {
			t.Errorf("%q: scanner says valid=%v (%v), encoding/json says %v", in, got, s.err(), want)
		}
	}
}

func scannerSeeds() []string {
	return []string{
		``, ` `, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-`, `-1.5e-10`, `1x`,
		`""`, `"\u00e9"`, `"\u00g9"`, `"\ud800"`, `"\q"`, `"a` + "\x7f" + `"`, "\"\xff\xfe\"", "\"\x01\"",
		`true`, `tru`, `truex`, `null`, `nul`, `false`, `[]`, `[1,]`, `[,1]`, `[1 2]`, `{}`, `{"a"}`,
		`{"a":}`, `{"a":1,}`, `{"a":1 "b":2}`, `{1:2}`, `{"a":[{"b":null}]}`, ` [ 1 , { } ] `,
		`{"a":"b"}` + "\x00", "\x00", `[` + strings.Repeat(`"abcdefgh\"ijk",`, 5) + `"z"]`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		chat2K, chatParts, messagesBody,
	}
}
