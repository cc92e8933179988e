"""Where each queue peer keeps its tasks in Redis: shared by the peers' own code (run in
their installs, so this module imports nothing) and the harness that watches them."""

TASKIQ_STREAM = "bench:taskiq"
TASKIQ_GROUP = "bench"
# arq's default queue; its keys are this name plus suffixes.
ARQ_QUEUE = "arq:queue"
# BullMQ's keys are bull:<queue>:wait, bull:<queue>:active, ...
BULLMQ_QUEUE = "bench"
