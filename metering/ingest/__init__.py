"""Getting events in: the ingest service behind POST /api/events, the Event Hub trigger's consumer, dead
letters, the validating Event Hub producer, and the health of the pipeline."""
