"""The egress gateway: the only code that opens connections from the trusted zone to the public one."""
