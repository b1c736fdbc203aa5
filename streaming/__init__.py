"""`tandem stream`: feature events from a broker (Redis Streams, NATS JetStream), written like pushes."""
