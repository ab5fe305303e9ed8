"""Outgoing data: the durable outbox, the MQTT link, topic names and payload shapes."""
