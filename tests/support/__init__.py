"""Shared helpers of the integration, differential, compat and stress suites."""
