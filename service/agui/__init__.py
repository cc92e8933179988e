"""AG-UI: an ingestion job seen as an AG-UI run; planning, the run record and the mapping."""
