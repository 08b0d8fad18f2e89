"""Speech for the hub: recognition built from the home's own sentences, and synthesis.

Meets the edge only on MQTT, like the hub (design.md section 2 and 10).
"""
