package edge

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

const filterStream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
	"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n" +
	"data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n" +
	"data: [DONE]\n\n"

const filteredStream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
	"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n" +
	"data: [DONE]\n\n"

func runFilter(chunks []string) string {
	var f usageFilter
	var out strings.Builder
	for _, c := range chunks {
		out.Write(f.pass([]byte(c)))
	}
	out.Write(f.flush())
	return out.String()
}

func TestUsageFilterAnyChunking(t *testing.T) {
	if got := runFilter([]string{filterStream}); got != filteredStream {
		t.Fatalf("one chunk:\n%q\nwant\n%q", got, filteredStream)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var chunks []string
		rest := filterStream
		for len(rest) > 0 {
			n := 1 + rng.IntN(min(len(rest), 40))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		if got := runFilter(chunks); got != filteredStream {
			t.Fatalf("chunks %q:\ngot  %q\nwant %q", chunks, got, filteredStream)
		}
	}
}

// Extra blank lines are split into events as an SSE reader splits them,
// wherever the chunks end (found by FuzzEdgeUpstreamStream: a chunk ending
// inside a run of newlines moved one into the usage event, which was then
// dropped with it, or out of it).
func TestUsageFilterBlankLineRuns(t *testing.T) {
	usage := "\n\x10data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9}}\n\n"
	stream := "data: {\"choices\":[{}]}\n\nda\n\n\n\n\n\n" + usage + "data: [DONE]\n\n"
	want := "data: {\"choices\":[{}]}\n\nda\n\n\n\n\n\ndata: [DONE]\n\n"
	for cut := 0; cut <= len(stream); cut++ {
		if got := runFilter([]string{stream[:cut], stream[cut:]}); got != want {
			t.Fatalf("cut at %d:\ngot  %q\nwant %q", cut, got, want)
		}
	}
}

func FuzzUsageFilter(f *testing.F) {
	f.Add([]byte(filterStream), uint8(7))
	f.Add([]byte("da\n\n\n\n\n\n\n\x10\"choices\":[],\"usage\":{}\n\ndata: [DONE]\n\n"), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		n := int(step%64) + 1
		var chunks []string
		for i := 0; i < len(data); i += n {
			chunks = append(chunks, string(data[i:min(i+n, len(data))]))
		}
		whole := runFilter([]string{string(data)})
		if got := runFilter(chunks); got != whole {
			t.Fatalf("chunking changed the output: %q vs %q", got, whole)
		}
	})
}

func TestEndsEvents(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"data: x\n\n", true},
		{"data: x\n", false},
		{"data: x\n\n\n", false}, // the third newline starts the next event
		{"data: x\n\n\n\n", true},
		{"\n\n", true},
		{"\n", false},
		{"data: x\n\ndata: y", false},
		{"", false},
	} {
		if got := endsEvents([]byte(tc.in)); got != tc.want {
			t.Errorf("endsEvents(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzEndsEvents: the check from the end agrees with lastEventEnd, which
// reads data from the start as an SSE reader does.
func FuzzEndsEvents(f *testing.F) {
	f.Add([]byte(filterStream))
	f.Add([]byte("da\n\n\n\n\n\n\n\x10\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := endsEvents(b), len(b) > 0 && lastEventEnd(b) == len(b); got != want {
			t.Fatalf("endsEvents(%q) = %v, lastEventEnd says %v", b, got, want)
		}
	})
}

func TestHasEmptyChoices(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{"choices":[],"usage":{}}`, true},
		{`"choices":[]`, true},
		{`choices":[]`, false}, // too short to hold the name before the []
		{`{"choices": [],"usage":{}}`, false},
		{`{"choices":[{}]}`, false},
		{`{"a":[],"choices":[[]]}`, false},
		{`{"a":[],"b":[]} {"choices":[]}`, true},
		{`"choices":[[]`, false},
		{`"choices":[][]`, true},
		{``, false},
	} {
		if got := hasEmptyChoices([]byte(tc.in)); got != tc.want {
			t.Errorf("hasEmptyChoices(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzHasEmptyChoices(f *testing.F) {
	f.Add([]byte(filterStream))
	f.Add([]byte(`"choices":[][]"choices":[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := hasEmptyChoices(b), bytes.Contains(b, []byte(`"choices":[]`)); got != want {
			t.Fatalf("hasEmptyChoices(%q) = %v, bytes.Contains says %v", b, got, want)
		}
	})
}

// BenchmarkUsageOnly is the check every chunk of every stream passes: a
// chunk of four events, none of them usage-only.
func BenchmarkUsageOnly(b *testing.B) {
	chunk := []byte(strings.Repeat(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}`+"\n\n", 4))
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if usageOnly(chunk) {
			b.Fatal("usage-only")
		}
	}
}

// BenchmarkUsageFilterPass is the filter's work on one read of a stream
// that arrived together: twenty events, none of them usage-only.
func BenchmarkUsageFilterPass(b *testing.B) {
	chunk := []byte(strings.Repeat(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}`+"\n\n", 20))
	var f usageFilter
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if out := f.pass(chunk); len(out) != len(chunk) {
			b.Fatalf("passed %d bytes of %d", len(out), len(chunk))
		}
	}
}
