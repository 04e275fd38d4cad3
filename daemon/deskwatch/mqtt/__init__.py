"""deskwatch.mqtt"""
