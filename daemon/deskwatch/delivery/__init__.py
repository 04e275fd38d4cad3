"""Delivery: the durable outbox (``outbox``) and the MQTT client that drains it (``client``)."""
