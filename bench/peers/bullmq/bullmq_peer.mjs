// BullMQ as a queue peer: `node bullmq_peer.mjs fill COUNT` or `node bullmq_peer.mjs work`.
//
// fill adds COUNT jobs of the same 200-byte content as our tasks with addBulk, 1,000 at a
// time, then exits. work runs one Worker with a no-op processor at concurrency 10 (our
// batches are 10) until SIGTERM. Completed jobs are removed, as our acked entries are: the
// harness watches the wait and active lists to time the run.
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";

// bench/peers/names.py owns the name; the harness passes it in.
const QUEUE_NAME = process.env.BENCH_BULLMQ_QUEUE;
const CONCURRENCY = 10;
const FILL_CHUNK = 1000;

// BullMQ 6 no longer brings its Redis client along; it takes constructed ioredis clients,
// which must not retry forever on a blocking command.
function connect() {
  return new Redis(process.env.BENCH_REDIS_URL, { maxRetriesPerRequest: null });
}

async function fill(count) {
  const queue = new Queue(QUEUE_NAME, { connection: connect() });
  const content = "x".repeat(200);
  for (let start = 0; start < count; start += FILL_CHUNK) {
    const jobs = [];
    for (let index = start; index < Math.min(count, start + FILL_CHUNK); index++) {
      jobs.push({
        name: "ingest",
        data: { job_id: "bench", chunk_id: `c${index}`, content },
        opts: { removeOnComplete: true, removeOnFail: true },
      });
    }
    await queue.addBulk(jobs);
  }
  await queue.close();
}

async function work() {
  const worker = new Worker(QUEUE_NAME, async () => null, {
    connection: connect(),
    concurrency: CONCURRENCY,
  });
  const stop = async () => {
    await worker.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

const [mode, count] = process.argv.slice(2);
if (mode === "fill") {
  await fill(Number(count));
  process.exit(0);
} else if (mode === "work") {
  await work();
} else {
  console.error("usage: bullmq_peer.mjs fill COUNT | work");
  process.exit(2);
}
