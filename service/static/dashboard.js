// The live dashboard. No build step and no dependencies: plain DOM, fetch and canvas.
//
// Every data call sends the token (if any) in the Authorization header; the token lives in
// sessionStorage and never in a URL, since URLs reach access logs. That is also why the live
// tail reads SSE with fetch() and a stream reader: EventSource cannot set headers.
//
// Rates come from /events/stats, polled every POLL_MS: each stream's entries_added (Redis's
// own running count of XADDs) is differenced over time, so they count every producer and
// worker, not one API process, and survive MAXLEN trimming.
"use strict";

(() => {
  const TOKEN_KEY = "shield.apiToken";
  const POLL_MS = 2000;
  const RATE_WINDOW_MS = 5 * 60 * 1000;
  const RATE_NOW_MS = 10 * 1000;
  const TAIL_ROWS = 200;
  const DATA_CHARS = 240;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 10000;
  const COLORS = ["#2458c6", "#c66a24", "#1b7f3b", "#8e24aa"];

  const byId = (id) => document.getElementById(id);

  class Unauthorized extends Error {}

  // ---- the token -------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function withAuth(headers) {
    const value = token();
    return value ? { ...headers, Authorization: `Bearer ${value}` } : { ...headers };
  }

  function askForToken() {
    byId("token-panel").hidden = false;
    setStatus("status", "the API wants a token", "bad");
  }

  function useToken(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
    byId("token-panel").hidden = true;
    byId("forget-token").hidden = false;
    refresh();
    restartTail();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    byId("forget-token").hidden = true;
    stopTail();
    askForToken();
  }

  // ---- small DOM helpers -----------------------------------------------------------------

  function setStatus(id, text, tone) {
    const element = byId(id);
    element.textContent = text;
    element.className = `status ${tone || ""}`;
  }

  // textContent only: stream contents are foreign input and must never become markup.
  function cell(text, className) {
    const element = document.createElement("td");
    element.textContent = text === null || text === undefined ? "—" : String(text);
    if (className) element.className = className;
    return element;
  }

  function row(cells) {
    const element = document.createElement("tr");
    element.append(...cells);
    return element;
  }

  // A row already shown (matched by dataset[key]) is kept, and only its cells that now read
  // differently are swapped. Replacing every row on every poll would also replace a button
  // the user is pressing, and the click would land on a detached element.
  function fillTable(id, rows, key) {
    const body = byId(id).tBodies[0];
    const shown = new Map([...body.rows].map((tr) => [tr.dataset[key], tr]));
    const next = rows.map((fresh) => {
      const old = shown.get(fresh.dataset[key]);
      if (!old || old.cells.length !== fresh.cells.length) return fresh;
      [...fresh.cells].forEach((freshCell, index) => {
        const oldCell = old.cells[index];
        if (oldCell.outerHTML !== freshCell.outerHTML) oldCell.replaceWith(freshCell);
      });
      Object.assign(old.dataset, fresh.dataset);
      return old;
    });
    const unchanged =
      next.length === body.rows.length && next.every((tr, index) => body.rows[index] === tr);
    if (!unchanged) body.replaceChildren(...next);
  }

  // ---- the API ---------------------------------------------------------------------------

  async function api(path, options = {}) {
    const reply = await fetch(path, {
      ...options,
      headers: withAuth(options.headers || {}),
      cache: "no-store",
    });
    if (reply.status === 401) {
      askForToken();
      throw new Unauthorized("token refused");
    }
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      throw new Error(`${path}: ${reply.status} ${body.detail || reply.statusText}`);
    }
    return body;
  }

  // ---- streams, groups and rates ---------------------------------------------------------

  const samples = [];

  function renderStats(stats) {
    const streams = Object.entries(stats.streams);
    fillTable(
      "streams",
      streams.map(([name, stream]) => {
        const tr = row([
          cell(name),
          cell(stream.length, "number"),
          cell(stream.entries_added, "number"),
          cell(stream.last_generated_id, "id"),
        ]);
        tr.dataset.stream = name;
        return tr;
      }),
      "stream",
    );
    fillTable(
      "groups",
      streams.flatMap(([name, stream]) =>
        stream.groups.map((group) => {
          const tr = row([
            cell(name),
            cell(group.name),
            cell(group.consumers, "number"),
            cell(group.pending, "number"),
            cell(group.lag, "number"),
          ]);
          tr.dataset.group = `${name}/${group.name}`;
          return tr;
        }),
      ),
      "group",
    );
    byId("dead-letter-total").textContent = `${stats.dead_letters} in all`;
    byId("waiting-retries").textContent = `${stats.waiting_retries} waiting for a retry`;
    if (stats.collected) renderCollected(stats.collected);
    recordSample(streams);
  }

  function recordSample(streams) {
    const now = Date.now();
    const added = {};
    for (const [name, stream] of streams) {
      if (typeof stream.entries_added === "number") added[name] = stream.entries_added;
    }
    samples.push({ at: now, added });
    while (samples.length && samples[0].at < now - RATE_WINDOW_MS) samples.shift();
    renderRates(Object.keys(added));
  }

  // Per second between two samples; null when the count went backwards (a Redis reset).
  function rateBetween(older, newer, name) {
    const before = older.added[name];
    const after = newer.added[name];
    const seconds = (newer.at - older.at) / 1000;
    if (before === undefined || after === undefined || seconds <= 0 || after < before) {
      return null;
    }
    return (after - before) / seconds;
  }

  function currentRate(name) {
    const newest = samples[samples.length - 1];
    const oldest = samples.find((sample) => sample.at >= newest.at - RATE_NOW_MS);
    const base = oldest === newest ? samples[samples.length - 2] : oldest;
    return base ? rateBetween(base, newest, name) : null;
  }

  // What the metrics-collector group's reader measured, for every API process together.
  function renderCollected(collected) {
    const seconds = (value) => (value === null || value === undefined ? "-" : `${value} s`);
    fillTable(
      "collected",
      [
        ["task enqueue to done", collected.task_latency],
        ["job first queued to last settled", collected.job_duration],
      ].map(([label, summary]) => {
        const tr = row([
          cell(label),
          cell(summary.count, "number"),
          cell(seconds(summary.mean_s), "number"),
          cell(seconds(summary.p50_at_most_s), "number"),
          cell(seconds(summary.p99_at_most_s), "number"),
        ]);
        tr.dataset.measure = label;
        return tr;
      }),
      "measure",
    );
    fillTable(
      "events-by-type",
      Object.entries(collected.events_by_type).map(([type, count]) => {
        const tr = row([cell(type), cell(count, "number")]);
        tr.dataset.type = type;
        return tr;
      }),
      "type",
    );
  }

  function renderRates(names) {
    const items = names.map((name, index) => {
      const item = document.createElement("li");
      item.dataset.stream = name;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[index % COLORS.length];
      const label = document.createElement("span");
      label.textContent = `${name}: `;
      const rate = document.createElement("span");
      rate.className = "rate";
      const value = currentRate(name);
      rate.textContent = value === null ? "—" : `${value.toFixed(1)}/s`;
      item.append(swatch, label, rate);
      return item;
    });
    byId("rates").replaceChildren(...items);
    drawChart(names);
  }

  function drawChart(names) {
    const canvas = byId("rate-chart");
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    const now = Date.now();
    const series = names.map((name) =>
      samples.slice(1).map((sample, index) => ({
        at: sample.at,
        rate: rateBetween(samples[index], sample, name),
      })),
    );
    const peak = Math.max(1, ...series.flat().map((point) => point.rate || 0));
    // The x axis spans the samples held, up to the window, so a fresh page is not one spike.
    const spanMs = Math.max(POLL_MS * 5, now - (samples.length ? samples[0].at : now));
    context.fillStyle = "#5d6778";
    context.font = "11px sans-serif";
    context.fillText(`${peak.toFixed(0)}/s`, 4, 12);
    context.fillText(`${Math.round(spanMs / 1000)} s ago`, 4, height - 4);
    context.fillText("now", width - 24, height - 4);
    series.forEach((points, index) => {
      context.strokeStyle = COLORS[index % COLORS.length];
      context.lineWidth = 2;
      context.beginPath();
      let drawing = false;
      for (const point of points) {
        if (point.rate === null) {
          drawing = false;
          continue;
        }
        const x = width - ((now - point.at) / spanMs) * width;
        const y = height - 16 - (point.rate / peak) * (height - 32);
        if (drawing) context.lineTo(x, y);
        else context.moveTo(x, y);
        drawing = true;
      }
      context.stroke();
    });
  }

  // ---- dead letters ----------------------------------------------------------------------

  function renderDeadLetters(page) {
    fillTable(
      "dead-letters",
      page.dead_letters.map((letter) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "requeue";
        button.textContent = "Requeue";
        button.dataset.id = letter.id;
        button.addEventListener("click", () => requeue(letter.id, button));
        const action = document.createElement("td");
        action.append(button);
        const tr = row([
          cell(letter.id, "id"),
          cell(letter.fields.job_id),
          cell(letter.fields.chunk_id),
          cell(letter.attempts, "number"),
          cell(letter.reason),
          cell(letter.dead_lettered_at, "time"),
          action,
        ]);
        tr.dataset.id = letter.id;
        return tr;
      }),
      "id",
    );
  }

  async function requeue(id, button) {
    button.disabled = true;
    try {
      const result = await api(`tasks/dead-letters/${encodeURIComponent(id)}/requeue`, {
        method: "POST",
      });
      byId("dead-letter-message").textContent = `requeued ${id} as task ${result.id}`;
    } catch (error) {
      byId("dead-letter-message").textContent = `requeue of ${id} failed: ${error.message}`;
      button.disabled = false;
    }
    refresh();
  }

  // ---- jobs ------------------------------------------------------------------------------

  const FINISHED = new Set(["done", "failed", "cancelled"]);

  function progressCell(job) {
    const settled = job.done + job.failed + job.cancelled;
    const meter = document.createElement("progress");
    meter.max = Math.max(job.total, 1);
    meter.value = settled;
    const td = document.createElement("td");
    const label = job.total_known ? `${settled}/${job.total}` : `${settled}/${job.total}+`;
    td.append(meter, document.createTextNode(` ${label}`));
    return td;
  }

  function renderJobs(page) {
    fillTable(
      "jobs",
      page.jobs.map((job) => {
        const action = document.createElement("td");
        if (!FINISHED.has(job.state) && job.state !== "cancelling") {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "cancel";
          button.textContent = "Cancel";
          button.addEventListener("click", () => cancelJob(job.job_id, button));
          action.append(button);
        }
        const tr = row([
          cell(job.job_id, "id"),
          cell(job.state, `state ${job.state}`),
          progressCell(job),
          cell(job.done, "number"),
          cell(job.failed, "number"),
          cell(job.cancelled, "number"),
          cell(job.running, "number"),
          cell(job.queued + job.retrying, "number"),
          cell(job.created_at, "time"),
          action,
        ]);
        tr.dataset.job = job.job_id;
        tr.dataset.state = job.state;
        return tr;
      }),
      "job",
    );
  }

  async function cancelJob(jobId, button) {
    button.disabled = true;
    try {
      const result = await api(`jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
      byId("job-message").textContent = `job ${jobId} is ${result.state}`;
    } catch (error) {
      byId("job-message").textContent = `cancel of ${jobId} failed: ${error.message}`;
      button.disabled = false;
    }
    refresh();
  }

  // ---- polling ---------------------------------------------------------------------------

  async function refresh() {
    try {
      const [stats, deadLetters, jobs] = await Promise.all([
        api("events/stats"),
        api("tasks/dead-letters?count=50"),
        // A token without jobs:read still sees the rest of the page.
        api("jobs?limit=20").catch((error) => {
          if (error instanceof Unauthorized) throw error;
          byId("job-message").textContent = `jobs: ${error.message}`;
          return { jobs: [], next_cursor: null };
        }),
      ]);
      renderStats(stats);
      renderDeadLetters(deadLetters);
      renderJobs(jobs);
      setStatus("status", `updated ${new Date().toLocaleTimeString()}`, "good");
    } catch (error) {
      if (!(error instanceof Unauthorized)) setStatus("status", error.message, "bad");
    }
  }

  // ---- the live tail: SSE read with fetch, so the token can go in a header ----------------

  // An incremental parser of the text/event-stream format (the HTML standard's rules for
  // fields, comments and the last event id, which persists across messages).
  function sseParser(onMessage) {
    let buffer = "";
    let event = "";
    let data = [];
    const parser = { lastEventId: "" };
    parser.push = (text) => {
      buffer += text;
      // A chunk may end between the \r and \n of one line end: hold the \r back.
      const held = buffer.endsWith("\r") ? "\r" : "";
      const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            onMessage({ event: event || "message", data: data.join("\n"), id: parser.lastEventId });
          }
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id" && !value.includes("\0")) parser.lastEventId = value;
      }
    };
    return parser;
  }

  const tail = { generation: 0, controller: null, lastId: "", types: "" };

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function showTailMessage(message) {
    let payload;
    try {
      payload = JSON.parse(message.data);
    } catch {
      payload = { raw: message.data };
    }
    // A server notice (event "notice": slow client, gap, shutdown, Redis lost) names where
    // to resume; follow it.
    if (message.event === "notice" && payload && typeof payload.resume_from === "string") {
      tail.lastId = payload.resume_from;
      setStatus("tail-status", `notice: ${payload.message || payload.notice}`, "bad");
      // The status moves on once the tail resumes; the last notice stays on hover.
      byId("tail-status").title = `last notice: ${payload.message || payload.notice}`;
      return;
    }
    const type = message.event !== "message" ? message.event : payload.type;
    const tr = row([
      cell(message.id, "id"),
      cell(type),
      cell(payload.job_id || ""),
      cell(JSON.stringify(payload).slice(0, DATA_CHARS), "data"),
    ]);
    tr.dataset.id = message.id;
    tr.dataset.type = type;
    const body = byId("tail").tBodies[0];
    body.prepend(tr);
    while (body.rows.length > TAIL_ROWS) body.lastElementChild.remove();
  }

  async function readTail(generation, signal) {
    // The dashboard's clients move the dashboard-frontend group (see /events/stats).
    const params = new URLSearchParams({ app: "dashboard-frontend" });
    if (tail.types) params.set("types", tail.types);
    const headers = withAuth({ Accept: "text/event-stream" });
    // Resume after the last event seen; the first connection starts at new events.
    if (tail.lastId) headers["Last-Event-ID"] = tail.lastId;
    else params.set("last_id", "$");
    const reply = await fetch(`events/stream?${params}`, { headers, signal, cache: "no-store" });
    if (reply.status === 401) {
      askForToken();
      throw new Unauthorized("token refused");
    }
    if (!reply.ok) {
      const body = await reply.json().catch(() => ({}));
      throw new Error(`${reply.status} ${body.detail || reply.statusText}`);
    }
    setStatus("tail-status", tail.types ? `live: ${tail.types}` : "live: all types", "good");
    const parser = sseParser(showTailMessage);
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    while (generation === tail.generation) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
      if (parser.lastEventId) tail.lastId = parser.lastEventId;
    }
  }

  async function followTail(generation, signal) {
    let delay = RETRY_MIN_MS;
    while (generation === tail.generation) {
      try {
        await readTail(generation, signal);
        delay = RETRY_MIN_MS;
      } catch (error) {
        if (signal.aborted || error instanceof Unauthorized) return;
        setStatus("tail-status", `reconnecting: ${error.message}`, "bad");
      }
      await sleep(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function stopTail() {
    tail.generation += 1;
    if (tail.controller) tail.controller.abort();
    tail.controller = null;
  }

  function restartTail() {
    stopTail();
    tail.controller = new AbortController();
    followTail(tail.generation, tail.controller.signal);
  }

  // ---- wiring ----------------------------------------------------------------------------

  byId("token-form").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const input = byId("token-input");
    const value = input.value.trim();
    input.value = "";
    if (value) useToken(value);
  });
  byId("forget-token").addEventListener("click", forgetToken);
  byId("forget-token").hidden = !token();
  byId("tail-form").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    tail.types = byId("tail-types").value.trim();
    tail.lastId = "";
    byId("tail").tBodies[0].replaceChildren();
    restartTail();
  });

  refresh();
  setInterval(refresh, POLL_MS);
  restartTail();
})();
