"""ComponentResources: one per host role."""
