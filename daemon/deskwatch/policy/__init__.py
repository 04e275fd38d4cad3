"""deskwatch.policy"""
