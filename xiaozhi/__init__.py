"""The wire contract: pure codecs, message models, topic names and error codes.

No sockets, no asyncio, no clock, no logging set-up: every function takes bytes or models
and returns bytes or models, so the edge, the hub and the simulator share one truth.
"""

__version__ = "0.1.0"
