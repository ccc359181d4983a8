package mockllm

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// echo answers any request that is not an LLM endpoint, standing in for
// "any other HTTP service" behind the edge: {"method","path","query",
// "body_bytes"}, so a test can see what arrived.
func (h *Handler) echo(w http.ResponseWriter, r *http.Request, size int64, ctl controls) {
	b := make([]byte, 0, 96+len(r.URL.Path)+len(r.URL.RawQuery))
	b = append(b, `{"method":`...)
	b = appendQuoted(b, r.Method)
	b = append(b, `,"path":`...)
	b = appendQuoted(b, r.URL.Path)
	b = append(b, `,"query":`...)
	b = appendQuoted(b, r.URL.RawQuery)
	b = append(b, `,"body_bytes":`...)
	b = strconv.AppendInt(b, size, 10)
	b = append(b, '}')
	writeBody(w, http.StatusOK, "application/json", b, ctl.breakAfter)
}

func appendQuoted(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// modelLists builds GET /v1/models once, in OpenAI's shape and in
// Anthropic's (for requests with an anthropic-version header).
func modelLists(models []string) [2][]byte {
	type openAIModel struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	type anthropicModel struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	}
	openai := struct {
		Object string        `json:"object"`
		Data   []openAIModel `json:"data"`
	}{Object: "list"}
	anthropic := struct {
		Data    []anthropicModel `json:"data"`
		HasMore bool             `json:"has_more"`
		FirstID string           `json:"first_id"`
		LastID  string           `json:"last_id"`
	}{FirstID: models[0], LastID: models[len(models)-1]}
	for _, m := range models {
		openai.Data = append(openai.Data, openAIModel{m, "model", created, "tollgate-mock"})
		anthropic.Data = append(anthropic.Data, anthropicModel{"model", m, m,
			time.Unix(created, 0).UTC().Format(time.RFC3339)})
	}
	var lists [2][]byte
	lists[0], _ = json.Marshal(openai) // plain structs always marshal
	lists[1], _ = json.Marshal(anthropic)
	return lists
}
