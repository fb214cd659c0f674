"""The raw archive of every message the hub accepted: Event Hubs Capture in Azure, the same layout under the dev host.

`capture` holds the file format and the blob names, `publisher` the dev host's writer, `reader` what reads either
back in enqueued order for audits and rebuilds.
"""
