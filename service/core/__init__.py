"""The small core: settings, names, the Redis client and what every domain reads."""
