// The official `openai` npm client against a running kiln serve:
// node openai_client.mjs http://127.0.0.1:PORT/v1 — chat, completions,
// streaming, logprobs and embeddings (the client's default base64 encoding
// decoded and compared with encoding_format "float"). Exit 0 when all pass.
import OpenAI from "openai";
import assert from "node:assert/strict";

const baseURL = process.argv[2];
const client = new OpenAI({ baseURL, apiKey: process.env.KILN_API_KEY || "none" });
let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

await check("models", async () => {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, "model");
});

await check("chat", async () => {
  const r = await client.chat.completions.create({
    model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 8, temperature: 0,
    logprobs: true, top_logprobs: 2,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.choices[0].logprobs.content[0].top_logprobs.length, 2);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await check("chat stream", async () => {
  const stream = await client.chat.completions.create({
    model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 8, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(finish);
  assert.ok(usage && usage.completion_tokens > 0);
  const once = await client.chat.completions.create({
    model: "tiny", messages: [{ role: "user", content: "hello" }], max_tokens: 8, temperature: 0,
  });
  assert.equal(text, once.choices[0].message.content);
});

await check("completions + legacy logprobs", async () => {
  const r = await client.completions.create({
    model: "tiny", prompt: "alpha beta", max_tokens: 5, temperature: 0, logprobs: 2,
  });
  assert.equal(r.object, "text_completion");
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, lp.token_logprobs.length);
  assert.equal(lp.tokens.length, lp.text_offset.length);
});

await check("completions stream", async () => {
  const stream = await client.completions.create({
    model: "tiny", prompt: "alpha beta", max_tokens: 5, temperature: 0, stream: true,
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
  const once = await client.completions.create({
    model: "tiny", prompt: "alpha beta", max_tokens: 5, temperature: 0,
  });
  assert.equal(text, once.choices[0].text);
});

await check("embeddings base64 == float", async () => {
  const b64 = await client.embeddings.create({ model: "tiny", input: ["alpha", "beta gamma"] });
  const flt = await client.embeddings.create({
    model: "tiny", input: ["alpha", "beta gamma"], encoding_format: "float",
  });
  assert.equal(b64.data.length, 2);
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(Array.from(b64.data[i].embedding), Array.from(flt.data[i].embedding));
  }
});

await check("bad request is a typed error", async () => {
  await assert.rejects(
    client.completions.create({ model: "tiny", prompt: "x", temperature: 5 }),
    (e) => e.status === 400 && e.param === "temperature");
});

process.exit(failures ? 1 : 0);
