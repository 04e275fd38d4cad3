"""The appliance's own health: sd_notify, the progress watchdog, journald, device readings, the local control socket."""
