"""Kafka in and out: wire schemas, decode + validate (rejects as values, routed to `<topic>.dlq`),
the batch consumer with caller-driven commits, the producer, replay sources (file; Kafka
offset/timestamp range) and the labelled simulators."""
