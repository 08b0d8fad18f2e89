"""Asyncio plumbing shared by the long-running processes (edge, hub): the one MQTT owner
per process and the logging set-up. It imports `xiaozhi` and libraries, never the edge or
the hub, so either can still scale out alone (design.md section 2)."""
