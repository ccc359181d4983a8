package mockllm

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pkg/llm"
)

// streamed turns a request body into the same request, streamed.
func streamed(body, extra string) string {
	return body[:len(body)-1] + `,"stream":true` + extra + `}`
}

const includeUsage = `,"stream_options":{"include_usage":true}`

func TestStreamChat(t *testing.T) {
	h, srv := server(t, Options{})
	for _, body := range []string{chatOne, chatTwo, chatLong} {
		_, data, _ := post(t, srv, "/v1/chat/completions", body)
		plain := decode[chatAnswer](t, data)
		want, _ := h.ExpectedUsage(llm.Chat, []byte(body))

		_, stream, err := post(t, srv, "/v1/chat/completions", streamed(body, includeUsage))
		if err != nil {
			t.Fatal(err)
		}
		evs := events(t, stream)
		n := len(plain.Choices)
		texts := make([]strings.Builder, n)
		roles, contents, finishes := 0, 0, 0
		for _, e := range evs[:len(evs)-2] {
			if !strings.HasSuffix(e.data, `,"usage":null}`) {
				t.Errorf("chunk without \"usage\":null: %s", e.data)
			}
			c := decode[chatChunk](t, []byte(e.data))
			ch := c.Choices[0]
			switch {
			case ch.Delta.Role == "assistant":
				roles++
			case ch.FinishReason != nil:
				finishes++
				if *ch.FinishReason != plain.Choices[ch.Index].FinishReason {
					t.Errorf("finish_reason %q, not as unstreamed", *ch.FinishReason)
				}
			default:
				contents++
				texts[ch.Index].WriteString(ch.Delta.Content)
			}
		}
		if pieces := min(8, int(want.OutputTokens)/n); roles != n || finishes != n || contents != n*pieces {
			t.Errorf("%d role, %d content and %d finish chunks; want %d, %d, %d", roles, contents, finishes, n, n*pieces, n)
		}
		for i := range texts {
			if texts[i].String() != plain.Choices[i].Message.Content {
				t.Errorf("streamed text %q, unstreamed %q", texts[i].String(), plain.Choices[i].Message.Content)
			}
		}
		last := decode[chatChunk](t, []byte(evs[len(evs)-2].data))
		if len(last.Choices) != 0 || last.Usage == nil || last.Usage.PromptTokens != want.InputTokens ||
			last.Usage.CompletionTokens != want.OutputTokens || evs[len(evs)-1].data != "[DONE]" {
			t.Errorf("stream ends %v, %v; want usage %+v and [DONE]", evs[len(evs)-2], evs[len(evs)-1], want)
		}
		assertMeter(t, llm.Chat, stream, want, true)

		// Without include_usage there is no usage at all, as with OpenAI.
		_, stream, _ = post(t, srv, "/v1/chat/completions", streamed(body, ""))
		if strings.Contains(string(stream), "usage") {
			t.Errorf("usage without include_usage: %s", stream)
		}
		if _, complete, done := meterStream(llm.Chat, stream, len(stream)); complete || !done {
			t.Errorf("meter: complete %v, done %v; want an incomplete stream that ended", complete, done)
		}
	}
}

func TestStreamCompletions(t *testing.T) {
	h, srv := server(t, Options{})
	body := `{"model":"gpt-3.5-turbo-instruct","prompt":["a b c","d e"],"max_tokens":20,"n":2}`
	want, _ := h.ExpectedUsage(llm.Completions, []byte(body))
	_, stream, _ := post(t, srv, "/v1/completions", streamed(body, includeUsage), HeaderChunks, "3")
	evs := events(t, stream)
	// 3 pieces for each of 2 choices, the usage chunk, [DONE].
	if len(evs) != 8 || evs[7].data != "[DONE]" {
		t.Fatalf("%d events: %s", len(evs), stream)
	}
	var text strings.Builder
	for _, e := range evs[:6] {
		c := decode[chatChunk](t, []byte(e.data))
		if c.Choices[0].Index == 0 {
			text.WriteString(c.Choices[0].Text)
		}
	}
	if got := text.String(); got != "mock completion of 2 prompts. mock completion of 2 prompts. mock completion of 2 prompts. mock completion of 2 prompts." {
		t.Errorf("text %q", got)
	}
	if want.OutputTokens != 40 {
		t.Errorf("ExpectedUsage %+v, want 2 choices of 20 tokens", want)
	}
	assertMeter(t, llm.Completions, stream, want, true)
}

func TestStreamMessages(t *testing.T) {
	h, srv := server(t, Options{Chunks: 4})
	want, _ := h.ExpectedUsage(llm.Messages, []byte(msgBody))
	_, stream, err := post(t, srv, "/v1/messages", streamed(msgBody, ""))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var text strings.Builder
	for _, e := range events(t, stream) {
		names = append(names, e.name)
		if e.name == "content_block_delta" {
			text.WriteString(decode[struct {
				Delta struct{ Text string } `json:"delta"`
			}](t, []byte(e.data)).Delta.Text)
		}
	}
	if got := strings.Join(names, " "); got != "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop" {
		t.Errorf("events: %s", got)
	}
	if text.String() != "mock reply to 3 messages. mock reply to 3" {
		t.Errorf("text %q", text.String())
	}
	assertMeter(t, llm.Messages, stream, want, true)
}

// assertMeter checks that llm's StreamMeter reads the stream the same in any
// chunking: whole, byte by byte, every size up to 64, and random sizes.
func assertMeter(t *testing.T, kind llm.Kind, stream []byte, want llm.Usage, wantComplete bool) {
	t.Helper()
	sizes := []int{len(stream)}
	for n := 1; n <= 64; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		u, complete, done := meterStream(kind, stream, n)
		if u != want || complete != wantComplete || !done {
			t.Fatalf("chunks of %d: %+v, complete %v, done %v; want %+v, %v", n, u, complete, done, want, wantComplete)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 100 {
		m := llm.NewStreamMeter(kind, 1)
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(300))
			m.Observe(rest[:k])
			rest = rest[k:]
		}
		if u, complete := m.Usage(); u != want || complete != wantComplete {
			t.Fatalf("random chunks: %+v, %v; want %+v", u, complete, want)
		}
	}
}
