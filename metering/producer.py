"""`from metering.producer import EventHubUsageProducer` keeps working: the producer is metering.ingest.producer."""

from metering.ingest.producer import EventHubUsageProducer, SendFailed, partition_key

__all__ = ["EventHubUsageProducer", "SendFailed", "partition_key"]
