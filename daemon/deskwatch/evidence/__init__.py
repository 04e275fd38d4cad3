"""deskwatch.evidence"""
