"""On-device vision: light/obstruction statistics, object and face detectors, identity."""
