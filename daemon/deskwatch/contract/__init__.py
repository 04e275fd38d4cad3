"""deskwatch.contract"""
