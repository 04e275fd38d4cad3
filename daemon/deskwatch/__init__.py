"""deskwatch: on-device desk-compliance checks for a webcam appliance."""

__version__ = "0.2.0"
