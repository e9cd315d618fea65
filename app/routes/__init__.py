"""Thin routers: parse, call the service, pick JSON or a stream."""
