"""What tests/ and bench/ share: the lab hosts, the Pulumi CLI, redis-server, child processes."""
