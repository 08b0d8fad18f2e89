"""Firmware simulator: an ESP32-S3 over WebSocket and MQTT, one device or thousands."""
