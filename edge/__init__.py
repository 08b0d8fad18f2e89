"""Edge worker: terminates device WebSockets and republishes on the MQTT topic tree."""
