package mockllm

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/pkg/llm"
)

// created is the "created" time of every answer, fixed so that answers are
// byte-for-byte reproducible.
const created = 1735689600 // 2025-01-01T00:00:00Z

// perItemTokens is what the mock adds to the input estimate for each
// message, prompt or input, as a chat template adds role and separator
// tokens. It makes the mock's input count differ from llm's estimate, so a
// test can tell which one the edge billed.
const perItemTokens = 3

// call is one LLM request being answered.
type call struct {
	kind  llm.Kind
	req   llm.Request
	id    string
	model []byte // JSON-quoted
	// text is the reply of one choice; its tokens are text[offsets[i]:offsets[i+1]].
	text    string
	offsets []int
	// stopped is false when the reply was cut by max_tokens.
	stopped bool
	usage   llm.Usage
}

// newCall works out the answer to body. Errors are for the client.
func (h *Handler) newCall(kind llm.Kind, body []byte) (*call, error) {
	req, err := llm.ParseRequest(kind, body)
	if err != nil {
		return nil, err
	}
	if kind == llm.Embeddings && req.Items == 0 {
		return nil, &llm.RequestError{Param: "input", Message: `"input" is required`}
	}
	c := &call{kind: kind, req: req, stopped: true}
	c.id = fmt.Sprintf("%s%08x", idPrefix[kind], crc32.ChecksumIEEE(body))
	c.model, _ = json.Marshal(req.Model) // a string always marshals
	c.usage.InputTokens = req.InputTokensEstimate + perItemTokens*int64(req.Items)
	if kind == llm.Embeddings {
		return c, nil
	}

	words := phrase(kind, req.Items)
	n := min(len(words), h.opts.MaxReplyTokens)
	if req.MaxTokens > 0 {
		n = int(min(req.MaxTokens, int64(h.opts.MaxReplyTokens)))
		c.stopped = int64(n) < req.MaxTokens
	}
	var b strings.Builder
	c.offsets = make([]int, n+1)
	for i := range n {
		w := words[i%len(words)]
		if i == 0 {
			w = w[1:]
		}
		b.WriteString(w)
		c.offsets[i+1] = b.Len()
	}
	c.text = b.String()
	c.usage.OutputTokens = int64(n) * req.Choices
	return c, nil
}

var idPrefix = [...]string{llm.Chat: "chatcmpl-mock-", llm.Completions: "cmpl-mock-",
	llm.Embeddings: "embd-mock-", llm.Messages: "msg_mock_"}

// phrase is the reply, one token per word, repeated as often as max_tokens
// asks: " mock reply to 3 messages." (the first word loses its space).
func phrase(kind llm.Kind, items int) []string {
	noun := " message"
	if kind == llm.Completions {
		noun = " prompt"
	}
	if items != 1 {
		noun += "s"
	}
	verb := []string{" mock", " reply", " to"}
	if kind == llm.Completions {
		verb = []string{" mock", " completion", " of"}
	}
	return append(verb, " "+strconv.Itoa(items), noun+".")
}

// tokens is the number of tokens in one choice's reply.
func (c *call) tokens() int { return len(c.offsets) - 1 }

// piece returns the text of piece i of k: the reply cut into k runs of
// whole tokens as even as can be.
func (c *call) piece(i, k int) string {
	n := c.tokens()
	return c.text[c.offsets[i*n/k]:c.offsets[(i+1)*n/k]]
}

// pieces is how many pieces a stream has: asked for, but at most one per
// token and at least one.
func (c *call) pieces(asked int) int { return max(1, min(asked, c.tokens())) }

// ExpectedUsage is the usage the mock reports for a request of the given
// kind (Options.MaxReplyTokens included), for tests that assert exact
// numbers: input tokens are llm.ParseRequest's InputTokensEstimate plus 3
// per message, prompt or input; output tokens are the reply's words (one
// token each) times the number of choices.
func (h *Handler) ExpectedUsage(kind llm.Kind, body []byte) (llm.Usage, error) {
	c, err := h.newCall(kind, body)
	if err != nil {
		return llm.Usage{}, err
	}
	return c.usage, nil
}
