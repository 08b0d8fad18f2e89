"""Asyncio plumbing shared by the long-running processes (edge, hub): the one MQTT owner
per process, the logging set-up, serving an ASGI app in the process's event loop (`asgi`) and
the process runner (`runner`). It imports `xiaozhi` and libraries, never the edge or
the hub, so either can still scale out alone (design.md section 2)."""
