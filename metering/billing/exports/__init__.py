"""Billing exports: usage sent exactly once to the systems that charge for it, and reconciled with them.

engine.py        intents first, settled by the hub, re-sent unchanged until acknowledged; one run
rows.py          the exports table: each partition's export state and its intents
values.py        what each kind of meter sends, and what a target can hold exactly (pure)
port.py          what a target implements
stripe.py        Stripe Billing meters, through the official SDK
marketplace.py   the Azure Marketplace metering service
reconcile.py     per target and metric: sent, acknowledged, the difference and its reasons
"""
