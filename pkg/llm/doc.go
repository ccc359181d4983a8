// Package llm is what the edge understands of LLM requests and answers,
// without a full schema: the model, max_tokens and stream flag of a request
// and a guess at its input tokens (ParseRequest), the request rewrite that
// makes an OpenAI stream report usage (WithIncludeUsage), the usage of an
// answer (ParseUsage) or of a stream as it passes by (StreamMeter), and the
// error bodies the OpenAI and Anthropic SDKs understand (WriteOpenAIError,
// WriteAnthropicError).
//
// It covers OpenAI's POST /v1/chat/completions, /v1/completions and
// /v1/embeddings, and Anthropic's POST /v1/messages (see Kind).
//
// Everything here runs on the edge's hot path, so bodies are read by a small
// validating scanner that allocates nothing and never builds values; it
// accepts exactly the JSON encoding/json accepts.
//
// # Estimating tokens
//
// Request.InputTokensEstimate sizes a reservation before the provider says
// what a request cost, and stands in for input usage a broken stream never
// reported. It is
//
//	ceil(text bytes / 4) + numbers + 1000 * media
//
// over the fields that become the prompt: messages, tools and functions
// (chat); system, messages and tools (Anthropic); prompt and suffix
// (completions); input (embeddings). "text bytes" are the bytes of every
// string value in those fields as they appear in the JSON, escapes included;
// keys are not counted, but the role and part-type values are, which comes
// to about the per-message overhead of a chat template. "numbers" counts
// numbers, which in a pre-tokenised prompt or input are token ids, one token
// each. "media" counts strings under url, data, file_data or image_url
// (images, audio and files, inline or linked): each is taken as 1,000 tokens
// instead of being counted by its size.
//
// Four bytes a token is the usual rule for English with BPE tokenizers.
// Other scripts cost about a token per character, and their 3-byte UTF-8 (or
// 6-byte \u escapes) comes out between 0.75 and 1.5 tokens per character:
// close, and mostly on the safe side for a reservation.
//
// StreamMeter estimates output the same way, at four bytes a token over the
// generated text it saw (see StreamMeter), and marks such usage Estimated.
package llm
