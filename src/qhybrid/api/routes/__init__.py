"""API routes, one module per resource: optimize, jobs, health."""
