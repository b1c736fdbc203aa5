"""What the service, the scheduler and the checker share: settings, schema, feature access, models."""
