-- Begin a batch: a chunk of a cancelled job is acked as cancelled, never run; any other is
-- counted running, one attempt more (job_begin in job_state.lua).
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] job context (JSON, see job_state),
-- ARGV[4..] triples: entry id, its job id and chunk id ('' and '': read from the entry)
-- Returns the ids acked as cancelled.
jobs_open(ARGV[3])
local cancelled = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local job, chunk = named_job(KEYS[1], id, ARGV[i + 1], ARGV[i + 2])
  if job_begin(KEYS[1], ARGV[1], ARGV[2], KEYS[2], id, job, chunk) then
    table.insert(cancelled, id)
  end
end
return cancelled
