"""One module per ``deskwatch`` command; ``cli.py`` finds them here."""
