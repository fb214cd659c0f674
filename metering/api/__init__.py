"""The HTTP layer: the contract's models (contract.py, what clients share), one handler module per area from
request data to responses (ingest, reads, billing, manage, health), problem details and the outage wrapper's
classes (http.py), and the OpenAPI document (openapi.py). Independent of the Functions runtime: triggers.py
translates its objects. docs/api.md explains the contract."""
