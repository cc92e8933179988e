"""The event domain: wire formats, filters, stream ids, publishing and the fan-out hub."""
