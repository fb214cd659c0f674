"""Per-tenant settings: plan, limit overrides and the history of billing terms."""
