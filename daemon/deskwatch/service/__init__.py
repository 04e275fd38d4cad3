"""deskwatch.service"""
