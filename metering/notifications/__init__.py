"""Messages to billing integrations through an outbox, and the sinks that deliver them."""
