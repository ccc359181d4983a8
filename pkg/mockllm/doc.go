// Package mockllm is a deterministic stand-in for OpenAI- and
// Anthropic-compatible providers and for any other HTTP service, so that
// `tollgate dev`, the tests and the load scripts run offline.
//
// It serves, in the providers' own shapes:
//
//	POST /v1/chat/completions  OpenAI chat, streamed when "stream": true
//	POST /v1/completions       OpenAI legacy completions, streamed too
//	POST /v1/embeddings        OpenAI embeddings (float or base64)
//	POST /v1/messages          Anthropic messages, streamed too
//	GET  /v1/models            the model list (Anthropic's shape when the
//	                           request has an anthropic-version header)
//
// and answers anything else with {"method","path","query","body_bytes"}.
// Paths match by suffix, as llm.KindOf does, so a mock mounted under a
// prefix still works.
//
// # Determinism
//
// The same request always gets the same answer, byte for byte:
//
//   - The reply of each choice is " mock reply to N messages." (for
//     completions " mock completion of N prompts."), N being the number of
//     messages or prompts, without its first space, one token per word,
//     repeated word by word until it has max_tokens tokens, capped at
//     Options.MaxReplyTokens (128). Without max_tokens it is the phrase
//     once. finish_reason is "length" (stop_reason "max_tokens") when the
//     reply stopped at max_tokens, "stop" ("end_turn") otherwise.
//   - Output tokens are the reply's words times the choices (n, or best_of
//     when larger).
//   - Input tokens are llm.ParseRequest's InputTokensEstimate plus 3 per
//     message, prompt or input (as a chat template adds a few per message),
//     so they differ from the estimate the edge makes by itself.
//   - Ids derive from a CRC-32 of the body, "created" is fixed at
//     2025-01-01, and embeddings are a splitmix64 sequence seeded by the
//     body and the input's index.
//
// Handler.ExpectedUsage computes the usage for a body without serving it.
//
// A streamed reply is cut into Options.Chunks pieces (8) of whole words,
// each piece one event, flushed at once. OpenAI streams end with a usage
// chunk when stream_options.include_usage is true (all chunks before it then
// carry "usage":null, as OpenAI's do), then "data: [DONE]"; Anthropic
// streams send message_start (input tokens), content_block_start, ping, the
// content_block_delta events, content_block_stop, message_delta (output
// tokens) and message_stop.
//
// # Control headers
//
//	X-Mock-Delay-Ms: N        wait N ms before answering
//	X-Mock-Chunk-Delay-Ms: N  wait N ms between streamed events
//	X-Mock-Status: S          answer status S (400-599) with the provider's
//	                          error body (Retry-After: 1 on 429, 503, 529)
//	X-Mock-Break-After: N     drop the connection after N events of a stream
//	                          (never later than just before the events that
//	                          carry the final usage), or after N bytes of any
//	                          other answer
//	X-Mock-Omit-Usage: 1      report no usage anywhere
//	X-Mock-Chunks: N          cut this stream into N pieces
//
// Delays end early when the client hangs up. A malformed control header is
// answered with 400, in the dialect of the endpoint.
//
// The handler logs nothing and builds answers by appending to pooled
// buffers: it is the baseline the edge is measured against in load tests.
package mockllm
