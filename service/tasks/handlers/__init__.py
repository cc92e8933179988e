"""Task handlers: who does the work of a task, named by SHIELD_TASK_HANDLER."""
