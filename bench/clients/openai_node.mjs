// The openai Node SDK against tiergate: chat, Responses (create, stream, tools, json_schema), embeddings.
// Prints one JSON line per capability, as the Python programs do (common.py).
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.TIERGATE_URL + "/v1", apiKey: "anything", maxRetries: 0 });
const ASK = "Summarize: cron jobs move to a queue";
const MESSAGES = [{ role: "user", content: ASK }];
const WEATHER = {
  type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false,
};
const TICKET = {
  type: "object",
  properties: { title: { type: "string" }, priority: { type: "integer" }, urgent: { type: "boolean" } },
  required: ["title", "priority", "urgent"],
  additionalProperties: false,
};
const h = (task) => ({ headers: { "X-Task-Type": task } });

function expect(ok, what) { if (!ok) throw new Error(what); }
function fakeText(text, model) {
  expect(typeof text === "string" && text.includes("Fake") && text.includes(model), `unexpected text ${JSON.stringify(text)}`);
}
function ticket(text) {
  const t = JSON.parse(text);
  expect(typeof t.title === "string" && Number.isInteger(t.priority) && typeof t.urgent === "boolean", `ticket ${text}`);
}

const cells = [
  ["chat", async () => {
    const r = await client.chat.completions.create({ model: "auto", messages: MESSAGES }, h("summary"));
    fakeText(r.choices[0].message.content, "gpt-5.4-mini");
  }],
  ["chat-stream", async () => {
    const stream = await client.chat.completions.create({ model: "auto", messages: MESSAGES, stream: true }, h("summary"));
    const pieces = [];
    for await (const c of stream) if (c.choices.length) pieces.push(c.choices[0].delta.content ?? "");
    expect(pieces.length > 1, `${pieces.length} chunks`);
    fakeText(pieces.join(""), "gpt-5.4-mini");
  }],
  ["chat-tools", async () => {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: WEATHER } }];
    const r = await client.chat.completions.create({ model: "auto", messages: MESSAGES, tools }, h("agent"));
    const calls = r.choices[0].message.tool_calls ?? [];
    expect(calls.length === 1 && calls[0].function.name === "get_weather", `tool calls ${JSON.stringify(calls)}`);
    expect(typeof JSON.parse(calls[0].function.arguments).city === "string", "no city");
  }],
  ["chat-structured", async () => {
    const response_format = { type: "json_schema", json_schema: { name: "ticket", schema: TICKET, strict: true } };
    const r = await client.chat.completions.parse({ model: "auto", messages: MESSAGES, response_format }, h("extraction"));
    ticket(r.choices[0].message.content);
    expect(r.choices[0].message.parsed?.title !== undefined, "not parsed");
  }],
  ["resp", async () => {
    const r = await client.responses.create({ model: "auto", input: ASK }, h("summary"));
    fakeText(r.output_text, "gpt-5.4-mini");
  }],
  ["resp-stream", async () => {
    const stream = await client.responses.create({ model: "auto", input: ASK, stream: true }, h("summary"));
    const deltas = [];
    let done = null;
    for await (const e of stream) {
      if (e.type === "response.output_text.delta") deltas.push(e.delta);
      if (e.type === "response.completed") done = e.response;
    }
    expect(deltas.length > 1, `${deltas.length} deltas`);
    expect(done !== null, "no response.completed");
    fakeText(deltas.join(""), "gpt-5.4-mini");
  }],
  ["resp-tools", async () => {
    const tools = [{ type: "function", name: "get_weather", parameters: WEATHER, strict: true }];
    const r = await client.responses.create({ model: "auto", input: ASK, tools }, h("agent"));
    const calls = r.output.filter((i) => i.type === "function_call");
    expect(calls.length === 1 && calls[0].name === "get_weather", `output ${JSON.stringify(r.output)}`);
    expect(typeof JSON.parse(calls[0].arguments).city === "string", "no city");
  }],
  ["resp-structured", async () => {
    const text = { format: { type: "json_schema", name: "ticket", schema: TICKET, strict: true } };
    const r = await client.responses.create({ model: "auto", input: ASK, text }, h("extraction"));
    ticket(r.output_text);
  }],
  ["embeddings", async () => {
    const r = await client.embeddings.create({ model: "auto", input: ["moving cron jobs", "a queue"] }, h("retrieval"));
    expect(r.data.length === 2 && r.data[0].embedding.length === 1536, "not 2 vectors of 1536");
  }],
  ["resp-anthropic", async () => {
    const { data, response } = await client.responses
      .create({ model: "claude-opus-5-5", input: ASK }, h("agent"))
      .withResponse();
    expect(response.headers.get("x-tiergate-model") === "claude-opus-5-5", "not served by claude-opus-5-5");
    fakeText(data.output_text, "Fake Claude reply from claude-opus-5-5");
  }],
];

for (const [cap, body] of cells) {
  let status = "ok", error = "";
  try { await body(); } catch (e) { status = "FAIL"; error = `${e.name}: ${e.message}`.replace(/\n/g, " ").slice(0, 300); }
  console.log(JSON.stringify({ client: "openai-node", cap, status, error }));
}
