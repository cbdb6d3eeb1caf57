"""Streaming detection: Kafka -> Faust agent -> the same engine as replay -> Kafka."""
