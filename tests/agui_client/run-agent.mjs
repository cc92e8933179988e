// Drives the official @ag-ui/client HttpAgent; the pytest tests in tests/service read its output.
//
//   node run-agent.mjs run <url> <runId> [token] < document
//     runs HttpAgent.runAgent() against POST /agui/ingest and prints one JSON line:
//     {outcome, events, state, failure}
//   node run-agent.mjs resume <url> <runId> <resumeRunId> <action> < document
//     runs the document, then a second run on the same agent whose resume answers every
//     interrupt the first one ended with by {action} ("retry" or "skip"); prints
//     {first, second}, each as run prints it
//   node run-agent.mjs cancel <url> <runId> <stepName> < document
//     runs the document and, when the step named starts, cancels the job with
//     DELETE /jobs/<runId>; prints what run prints
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

async function runOnce(agent, input, onStep = () => {}) {
  const events = [];
  let outcome = null;
  let finished = null;
  let failure = null;
  const subscriber = {
    onEvent: ({ event }) => {
      events.push(describe(event));
      if (event.type === "STEP_STARTED") onStep(event.stepName);
    },
    onRunFinishedEvent: ({ outcome: how, interrupts }) => {
      outcome = "RUN_FINISHED";
      finished = { outcome: how, interrupts: interrupts ?? [] };
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
  return {
    outcome,
    finished,
    events,
    state: agent.state,
    pendingInterrupts: agent.pendingInterrupts ?? [],
    failure,
  };
}

const forwardedProps = { source_uri: "file:///from-node.txt", source_type: "text" };

function documentAgent(url, token) {
  const document = readFileSync(0, "utf8");
  return new HttpAgent({
    url,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    threadId: "thread-node",
    initialMessages: [{ id: "document", role: "user", content: document }],
  });
}

async function run(url, runId, token) {
  return runOnce(documentAgent(url, token), { runId, forwardedProps });
}

async function resume(url, runId, resumeRunId, action) {
  const agent = documentAgent(url);
  const first = await runOnce(agent, { runId, forwardedProps });
  const answers = agent.pendingInterrupts.map((interrupt) => ({
    interruptId: interrupt.id,
    status: "resolved",
    payload: { action },
  }));
  const second = await runOnce(agent, { runId: resumeRunId, forwardedProps, resume: answers });
  return { first, second };
}

async function cancel(url, runId, stepName) {
  const jobUrl = new URL(`/jobs/${encodeURIComponent(runId)}`, url);
  let cancelled = null;
  const result = await runOnce(documentAgent(url), { runId, forwardedProps }, (started) => {
    if (started === stepName && cancelled === null) {
      cancelled = fetch(jobUrl, { method: "DELETE" }).then((answer) => answer.status);
    }
  });
  return { ...result, deleteStatus: await cancelled };
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
const modes = { run, resume, cancel, selfcheck };
const result = await modes[mode](...args);
process.stdout.write(`${JSON.stringify(result)}\n`);
