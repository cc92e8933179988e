"""The Pulumi program that provisions the Redis host and deploys the service to the orchestrator."""
