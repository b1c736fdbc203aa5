"""Fault tests: real servers of their own on spare loopback ports, killed, stalled or garbled on purpose."""
