// check.mjs drives a running Tollgate edge with the official OpenAI and
// Anthropic SDKs and checks that every refusal comes out of the SDK as the
// exception class a client would catch for it, and that plain and streamed
// answers parse. tests/sdk_test.go runs it against `tollgate dev`.
//
//	node check.mjs [edge-base-url]
//
// The edge URL (e.g. http://127.0.0.1:8080, without /v1) is the first
// argument or SDK_CHECK_EDGE_URL. Keys come from the environment:
//
//	SDK_CHECK_KEY_MAIN      PREDICT, no limits that the checks reach
//	SDK_CHECK_KEY_RPM       PREDICT with --rpm 2
//	SDK_CHECK_KEY_READONLY  READ only (no PREDICT)
//	SDK_CHECK_KEY_MODELS    PREDICT with --models gpt-3.5-turbo
//	SDK_CHECK_KEY_SMALL     PREDICT with --max-request-bytes 100
//	SDK_CHECK_KEY_REVOKED   a revoked key
//
// It prints one line per check, "ok <name>" or "FAIL <name>: expected X got
// Y", and exits 1 if any check failed (2 on bad usage).
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const edge = (process.argv[2] || process.env.SDK_CHECK_EDGE_URL || '').replace(/\/+$/, '');
const key = {};
for (const name of ['MAIN', 'RPM', 'READONLY', 'MODELS', 'SMALL', 'REVOKED']) {
  key[name.toLowerCase()] = process.env[`SDK_CHECK_KEY_${name}`];
}
const missing = Object.entries(key).filter(([, v]) => !v).map(([k]) => `SDK_CHECK_KEY_${k.toUpperCase()}`);
if (!edge || missing.length) {
  console.error(`usage: node check.mjs <edge-base-url>, with ${Object.keys(key).map((k) => `SDK_CHECK_KEY_${k.toUpperCase()}`).join(', ')} set`);
  if (missing.length) console.error(`missing: ${missing.join(', ')}`);
  process.exit(2);
}

const UNKNOWN_KEY = 'en_sdkcheckunknownkey0000000000';
const MAX_TOKENS = 5; // the mock answers exactly this many output tokens

// Clients read no configuration from the environment that could change what
// is sent (OPENAI_*, ANTHROPIC_*): everything is given here.
function openai(apiKey, headers = {}) {
  return new OpenAI({
    apiKey, baseURL: `${edge}/v1`, maxRetries: 0, timeout: 15_000,
    organization: null, project: null, webhookSecret: null, defaultHeaders: headers,
  });
}
function anthropic(apiKey, headers = {}) {
  return new Anthropic({
    apiKey, authToken: null, baseURL: edge, maxRetries: 0, timeout: 15_000, defaultHeaders: headers,
  });
}

const chat = (extra = {}) => ({
  model: 'gpt-4', messages: [{ role: 'user', content: 'hello' }], max_tokens: MAX_TOKENS, ...extra,
});
const msg = (extra = {}) => ({
  model: 'claude-3-opus', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: 'hello' }], ...extra,
});
const longText = 'x'.repeat(400); // well over a 100-byte request limit

let failures = 0;

class CheckError extends Error {}
function expect(cond, want, got) {
  if (!cond) throw new CheckError(`expected ${want} got ${got}`);
}

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failures++;
    const why = e instanceof CheckError ? e.message : `expected success got ${describe(e)}`;
    console.log(`FAIL ${name}: ${why}`);
  }
}

// describe names what an SDK call threw: class, status and body.
function describe(e) {
  if (e === undefined) return 'no exception (the call succeeded)';
  const cls = e?.constructor?.name ?? typeof e;
  const parts = [cls];
  if (e?.status !== undefined) parts.push(`status ${e.status}`);
  if (e?.error !== undefined) parts.push(`body ${JSON.stringify(e.error)}`);
  else if (e?.message) parts.push(JSON.stringify(e.message));
  return parts.join(', ');
}

// refused checks that call() throws exactly cls with status, then runs more
// checks on the exception.
async function refused(name, call, cls, status, more) {
  await check(name, async () => {
    let err;
    try {
      await call();
    } catch (e) {
      err = e;
    }
    expect(err !== undefined && err.constructor === cls && err.status === status,
      `${cls.name} (status ${status})`, describe(err));
    if (more) more(err);
  });
}

// An OpenAI error's fields: err.error is the body's "error" object.
const openaiCode = (code) => (err) =>
  expect(err.code === code, `error.code ${JSON.stringify(code)}`, `${JSON.stringify(err.code)} in ${JSON.stringify(err.error)}`);
// An Anthropic error's fields: err.error is the whole body.
const anthropicType = (type) => (err) =>
  expect(err.error?.type === 'error' && err.error?.error?.type === type,
    `an Anthropic error body of type ${type}`, JSON.stringify(err.error));

function retryAfter(err) {
  const ra = err.headers?.get('retry-after');
  expect(ra !== null && ra !== undefined && /^\d+$/.test(ra) && Number(ra) >= 1,
    'a Retry-After header of whole seconds >= 1', JSON.stringify(ra));
  const limit = err.headers?.get('x-ratelimit-limit-requests');
  expect(limit === '2', 'x-ratelimit-limit-requests 2', JSON.stringify(limit));
}

// untilRefused sends requests until one fails (the RPM key allows two a
// minute) and rethrows that failure; at most five tries.
async function untilRefused(send) {
  for (let i = 0; i < 5; i++) await send();
  throw new CheckError('expected a refusal within 5 requests got 5 successes');
}

// ---------------------------------------------------------------- OpenAI

const oa = openai(key.main);

await check('openai chat.completions.create', async () => {
  const c = await oa.chat.completions.create(chat());
  const text = c.choices?.[0]?.message?.content;
  expect(typeof text === 'string' && text.length > 0, 'a reply in choices[0].message.content', JSON.stringify(c));
  expect(c.usage?.completion_tokens === MAX_TOKENS, `usage.completion_tokens ${MAX_TOKENS}`, JSON.stringify(c.usage));
});

await check('openai stream without include_usage: every chunk has choices, none has usage', async () => {
  const stream = await oa.chat.completions.create(chat({ stream: true }));
  let chunks = 0;
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    expect(Array.isArray(chunk.choices) && chunk.choices.length > 0, 'non-empty choices in every chunk',
      `chunk ${chunks}: ${JSON.stringify(chunk)}`);
    expect(chunk.usage === undefined || chunk.usage === null, 'no usage in any chunk',
      `chunk ${chunks}: ${JSON.stringify(chunk)}`);
    text += chunk.choices[0].delta?.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  expect(chunks > 1 && text.length > 0, 'several chunks with content', `${chunks} chunks, text ${JSON.stringify(text)}`);
  expect(finish !== null, 'a finish_reason in the last chunks', 'none');
});

await check('openai stream with include_usage: the final chunk has usage', async () => {
  const stream = await oa.chat.completions.create(chat({ stream: true, stream_options: { include_usage: true } }));
  let last;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    last = chunk;
  }
  expect(chunks > 1, 'several chunks', chunks);
  expect(last?.usage?.completion_tokens === MAX_TOKENS && last.usage.prompt_tokens > 0,
    `usage with completion_tokens ${MAX_TOKENS} in the final chunk`, JSON.stringify(last));
  expect(Array.isArray(last.choices) && last.choices.length === 0, 'empty choices in the usage chunk', JSON.stringify(last));
});

await check('openai models.list with a READ key', async () => {
  const ids = [];
  for await (const m of openai(key.readonly).models.list()) ids.push(m.id);
  expect(['gpt-4', 'gpt-3.5-turbo', 'gpt-4o-mini', 'claude-3-opus'].every((id) => ids.includes(id)),
    'the four dev models', JSON.stringify(ids));
});

await refused('openai unknown key -> AuthenticationError',
  () => openai(UNKNOWN_KEY).chat.completions.create(chat()),
  OpenAI.AuthenticationError, 401, openaiCode('invalid_api_key'));

await refused('openai revoked key -> AuthenticationError',
  () => openai(key.revoked).chat.completions.create(chat()),
  OpenAI.AuthenticationError, 401, openaiCode('key_revoked'));

await refused('openai key without PREDICT -> PermissionDeniedError',
  () => openai(key.readonly).chat.completions.create(chat()),
  OpenAI.PermissionDeniedError, 403);

await refused('openai models.list without READ -> PermissionDeniedError',
  () => openai(key.main).models.list(),
  OpenAI.PermissionDeniedError, 403);

await refused('openai model filter -> PermissionDeniedError "Model not allowed"',
  () => openai(key.models).chat.completions.create(chat({ model: 'gpt-4' })),
  OpenAI.PermissionDeniedError, 403, (err) => {
    expect(err.error?.message === 'Model not allowed', 'message "Model not allowed"', JSON.stringify(err.error?.message));
    openaiCode('model_not_allowed')(err);
  });

await refused('openai unknown model -> NotFoundError',
  () => oa.chat.completions.create(chat({ model: 'gpt-sdk-check-no-such-model' })),
  OpenAI.NotFoundError, 404);

await refused('openai bad max_tokens -> BadRequestError',
  () => oa.chat.completions.create(chat({ max_tokens: -1 })),
  OpenAI.BadRequestError, 400);

await refused('openai missing model -> BadRequestError',
  () => oa.chat.completions.create(chat({ model: undefined })),
  OpenAI.BadRequestError, 400);

await refused('openai Anthropic model on chat completions -> BadRequestError',
  () => oa.chat.completions.create(chat({ model: 'claude-3-opus' })),
  OpenAI.BadRequestError, 400);

// openai-node has no class of its own for 413: APIError.generate falls
// through to the base APIError for any status it does not list (400, 401,
// 403, 404, 409, 422, 429, >= 500). That exact class is what a client gets.
await refused('openai request too large -> APIError (413; the SDK has no subclass for it)',
  () => openai(key.small).chat.completions.create(chat({ messages: [{ role: 'user', content: longText }] })),
  OpenAI.APIError, 413);

await refused('openai upstream 500 passed through -> InternalServerError',
  () => openai(key.main, { 'X-Mock-Status': '500' }).chat.completions.create(chat()),
  OpenAI.InternalServerError, 500);

await refused('openai RPM limit -> RateLimitError with Retry-After',
  () => untilRefused(() => openai(key.rpm).chat.completions.create(chat({ model: 'gpt-4o-mini' }))),
  OpenAI.RateLimitError, 429, (err) => {
    retryAfter(err);
    openaiCode('rate_limit_exceeded')(err);
  });

// ------------------------------------------------------------- Anthropic

const an = anthropic(key.main);

await check('anthropic messages.create', async () => {
  const m = await an.messages.create(msg());
  expect(m.type === 'message' && m.content?.[0]?.type === 'text' && m.content[0].text.length > 0,
    'a text reply', JSON.stringify(m));
  expect(m.usage?.output_tokens === MAX_TOKENS && m.usage.input_tokens > 0,
    `usage with output_tokens ${MAX_TOKENS}`, JSON.stringify(m.usage));
});

await check('anthropic messages.stream finalMessage() usage', async () => {
  const stream = an.messages.stream(msg());
  let text = '';
  stream.on('text', (t) => { text += t; });
  const m = await stream.finalMessage();
  expect(text.length > 0, 'text events', JSON.stringify(text));
  expect(m.usage?.output_tokens === MAX_TOKENS && m.usage.input_tokens > 0,
    `usage with output_tokens ${MAX_TOKENS} and input_tokens > 0`, JSON.stringify(m.usage));
});

await refused('anthropic unknown key -> AuthenticationError',
  () => anthropic(UNKNOWN_KEY).messages.create(msg()),
  Anthropic.AuthenticationError, 401, anthropicType('authentication_error'));

await refused('anthropic revoked key -> AuthenticationError',
  () => anthropic(key.revoked).messages.create(msg()),
  Anthropic.AuthenticationError, 401);

await refused('anthropic key without PREDICT -> PermissionDeniedError',
  () => anthropic(key.readonly).messages.create(msg()),
  Anthropic.PermissionDeniedError, 403, anthropicType('permission_error'));

await refused('anthropic model filter -> PermissionDeniedError "Model not allowed"',
  () => anthropic(key.models).messages.create(msg()),
  Anthropic.PermissionDeniedError, 403, (err) =>
    expect(err.error?.error?.message === 'Model not allowed', 'message "Model not allowed"', JSON.stringify(err.error)));

await refused('anthropic unknown model -> NotFoundError',
  () => an.messages.create(msg({ model: 'claude-sdk-check-no-such-model' })),
  Anthropic.NotFoundError, 404, anthropicType('not_found_error'));

// The TypeScript types require max_tokens, but the SDK sends the request
// without it at run time: the edge must refuse it.
await refused('anthropic missing max_tokens -> BadRequestError',
  () => an.messages.create(msg({ max_tokens: undefined })),
  Anthropic.BadRequestError, 400, anthropicType('invalid_request_error'));

await refused('anthropic OpenAI model on messages -> BadRequestError',
  () => an.messages.create(msg({ model: 'gpt-4' })),
  Anthropic.BadRequestError, 400);

await refused('anthropic request too large -> ContentTooLargeError',
  () => anthropic(key.small).messages.create(msg({ messages: [{ role: 'user', content: longText }] })),
  Anthropic.ContentTooLargeError, 413, anthropicType('request_too_large'));

await refused('anthropic upstream 500 passed through -> InternalServerError',
  () => anthropic(key.main, { 'X-Mock-Status': '500' }).messages.create(msg()),
  Anthropic.InternalServerError, 500, anthropicType('api_error'));

await refused('anthropic RPM limit -> RateLimitError with Retry-After',
  () => untilRefused(() => anthropic(key.rpm).messages.create(msg())),
  Anthropic.RateLimitError, 429, (err) => {
    retryAfter(err);
    anthropicType('rate_limit_error')(err);
  });

if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
