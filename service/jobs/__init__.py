"""Jobs as resources: a document's chunks, counted in Redis by the queue's own scripts."""
