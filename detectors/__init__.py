"""Detection logic: events in, alerts out. No Faust or Kafka imports."""
