"""What a field technician runs at the desk: selftest, provisioning, the framing snapshot."""
