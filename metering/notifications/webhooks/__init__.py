"""Webhooks: every notification of the outbox also POSTed to one receiver, signed per Standard Webhooks.

`rows` keeps each delivery (pending, or failed once given up) next to the outbox, `backoff` says when to try
again, `sender` signs and POSTs one attempt, and `dispatcher` runs the due attempts concurrently.
"""
