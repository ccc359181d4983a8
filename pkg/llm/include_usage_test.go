package llm

import (
	"errors"
	"testing"
)

func TestWithIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{`{}`, `{"stream_options":{"include_usage":true}}`},
		{"{ \n}", "{\"stream_options\":{\"include_usage\":true} \n}"},
		{"{\n  \"model\": \"m\"\n}\n", "{\n  \"model\": \"m\",\"stream_options\":{\"include_usage\":true}\n}\n"},
		{`{"stream_options":null,"model":"m"}`, `{"stream_options":{"include_usage":true},"model":"m"}`},
		{`{"stream_options":{},"model":"m"}`, `{"stream_options":{"include_usage":true},"model":"m"}`},
		{`{"stream_options":{"continuous_usage_stats":true}}`,
			`{"stream_options":{"continuous_usage_stats":true,"include_usage":true}}`},
		{`{"stream_options": {"include_usage": false, "x": [1]}}`, `{"stream_options": {"include_usage": true, "x": [1]}}`},
		{`{"stream_options":{"include_usage":null}}`, `{"stream_options":{"include_usage":true}}`},
		{`{"stream_options":{"include_usage":"no"}}`, `{"stream_options":{"include_usage":true}}`},
		// Both duplicates are fixed, whichever one upstream believes.
		{`{"stream_options":{"include_usage":false,"include_usage":false}}`,
			`{"stream_options":{"include_usage":true,"include_usage":true}}`},
		{`{"stream_options":{"a":1},"stream_options":null}`,
			`{"stream_options":{"a":1,"include_usage":true},"stream_options":{"include_usage":true}}`},
		{`{"stream\u005foptions":{"include\u005fusage":false}}`, `{"stream\u005foptions":{"include\u005fusage":true}}`},
		// Unicode, escapes and numbers elsewhere are left byte for byte.
		{`{"messages":[{"content":"caf\u00e9 \"é\""}],"temperature":1.0E0}`,
			`{"messages":[{"content":"caf\u00e9 \"é\""}],"temperature":1.0E0,"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		got, err := WithIncludeUsage([]byte(tt.in))
		if err != nil {
			t.Errorf("WithIncludeUsage(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("WithIncludeUsage(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func TestWithIncludeUsageUnchanged(t *testing.T) {
	in := []byte(`{"model":"m","stream_options":{"include_usage":true}}`)
	got, err := WithIncludeUsage(in)
	if err != nil || &got[0] != &in[0] {
		t.Errorf("WithIncludeUsage copied a body that needed no change (err %v)", err)
	}
}

func TestWithIncludeUsageErrors(t *testing.T) {
	for in, want := range map[string]string{
		``:                              "the body is not valid JSON: unexpected end of JSON input",
		`[]`:                            "the body must be a JSON object",
		`{"model":"m"`:                  "the body is not valid JSON: unexpected end of JSON input",
		`{"stream_options":{"a":}}`:     "the body is not valid JSON: invalid character '}' looking for beginning of value at offset 23",
		`{"stream_options":"yes"}`:      `"stream_options" must be an object`,
		`{"stream_options":{}} x`:       "the body is not valid JSON: invalid character 'x' after top-level value at offset 22",
		`{"stream_options":[1,2,3]}`:    `"stream_options" must be an object`,
		`{"stream_options":{"a":1},}`:   "the body is not valid JSON: invalid character '}' looking for beginning of object key string at offset 26",
		`{"model":"m","stream_options"`: "the body is not valid JSON: unexpected end of JSON input",
	} {
		_, err := WithIncludeUsage([]byte(in))
		var re *RequestError
		if !errors.As(err, &re) || re.Message != want {
			t.Errorf("WithIncludeUsage(%s) = %v, want %q", in, err, want)
		}
	}
}

func TestAppendIncludeUsage(t *testing.T) {
	dst := []byte("prefix:")
	got, err := AppendIncludeUsage(dst, []byte(`{"stream_options":{"include_usage":true}}`))
	if err != nil || string(got) != `prefix:{"stream_options":{"include_usage":true}}` {
		t.Errorf("AppendIncludeUsage = %s, %v", got, err)
	}
	got, err = AppendIncludeUsage(dst, []byte(`{"a":1}`))
	if err != nil || string(got) != `prefix:{"a":1,"stream_options":{"include_usage":true}}` {
		t.Errorf("AppendIncludeUsage = %s, %v", got, err)
	}
	if got, err := AppendIncludeUsage(dst, []byte(`{"a":`)); err == nil || string(got) != "prefix:" {
		t.Errorf("AppendIncludeUsage of bad JSON = %s, %v", got, err)
	}
}
