"""The workstation companion (``deskwatch-desk``): input idleness and the worker's pause button.

It runs on the worker's PC, not on the appliance, and talks to the appliance only
through the broker: it publishes ``activity`` (seconds since the last keyboard or
mouse input, from the platform's own idle API: never key values, never window
titles) and ``cmd/pause`` / ``cmd/resume``, and reads ``cmd/result``, ``scan`` and
``event`` of its own desk to show the worker what the supervisor sees.

Only the standard library, paho-mqtt and PyYAML (through the config loader) are
needed; the window uses Tk, which ships with Python on Windows and macOS
(``python3-tk`` on Debian).
"""

__version__ = "0.2.0"
