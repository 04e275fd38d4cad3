"""deskwatch.outbox"""
