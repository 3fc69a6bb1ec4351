"""Alerts: thresholds of the credit pool and of key budgets reached at ingestion, recorded
once per period and delivered as signed webhooks (SPEC 6.3; README "Alerts and
webhooks")."""
