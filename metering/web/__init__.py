"""The pages of the service: the tenant portal and the operator console (not built yet).

Each page is an HTML shell and its static assets, served by a handler in metering/api/ and reading its data from
JSON routes there; what a page shows comes from the services (metering/bootstrap.py), never from the store
directly.
"""
