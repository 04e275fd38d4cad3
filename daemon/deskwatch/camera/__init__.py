"""deskwatch.camera"""
