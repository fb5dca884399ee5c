"""The HTTP API (trusted zone): routes, request/response schemas, validation, authentication.

It stores jobs and kicks the queue through ``qhybrid.jobs``; it never touches quantum code.
"""
