// Drives the official @ag-ui/client HttpAgent; the pytest tests in tests/service read its output.
//
//   node run-agent.mjs run <url> <runId> [token] < document
//     runs HttpAgent.runAgent() against POST /agui/ingest and prints one JSON line:
//     {outcome, events, state, failure}
//   node run-agent.mjs selfcheck
//     feeds the same client a valid and an invalid event sequence through a stub fetch and
//     prints {valid, invalid}: proof that the client's own sequence checks are on.
import { readFileSync } from "node:fs";
import { HttpAgent } from "@ag-ui/client";

function describe(event) {
  if (event.type === "STEP_STARTED" || event.type === "STEP_FINISHED") {
    return `${event.type} ${event.stepName}`;
  }
  return event.type;
}

async function runOnce(agent, input) {
  const events = [];
  let outcome = null;
  let failure = null;
  const subscriber = {
    onEvent: ({ event }) => {
      events.push(describe(event));
    },
    onRunFinishedEvent: () => {
      outcome = "RUN_FINISHED";
    },
    onRunErrorEvent: ({ event }) => {
      outcome = `RUN_ERROR: ${event.message}`;
    },
  };
  try {
    await agent.runAgent(input, subscriber);
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error);
  }
  return { outcome, events, state: agent.state, failure };
}

async function run(url, runId, token) {
  const document = readFileSync(0, "utf8");
  const agent = new HttpAgent({
    url,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    threadId: "thread-node",
    initialMessages: [{ id: "document", role: "user", content: document }],
  });
  const forwardedProps = { source_uri: "file:///from-node.txt", source_type: "text" };
  return runOnce(agent, { runId, forwardedProps });
}

function stubAgent(events) {
  const body = events.map((event) => `data: ${JSON.stringify(event)}\n\n`).join("");
  const fetch = async () =>
    new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  return new HttpAgent({ url: "http://stub.invalid/agui", fetch, threadId: "t" });
}

async function selfcheck() {
  const started = { type: "RUN_STARTED", threadId: "t", runId: "r" };
  const finished = { type: "RUN_FINISHED", threadId: "t", runId: "r" };
  const valid = await runOnce(
    stubAgent([
      started,
      { type: "STEP_STARTED", stepName: "r-1" },
      { type: "STEP_FINISHED", stepName: "r-1" },
      finished,
    ]),
    { runId: "r" },
  );
  // A step finished that never started: what a wrong mapping would send.
  const invalid = await runOnce(
    stubAgent([started, { type: "STEP_FINISHED", stepName: "r-1" }, finished]),
    { runId: "r" },
  );
  return { valid, invalid };
}

const [mode, ...args] = process.argv.slice(2);
const result = mode === "selfcheck" ? await selfcheck() : await run(...args);
process.stdout.write(`${JSON.stringify(result)}\n`);
