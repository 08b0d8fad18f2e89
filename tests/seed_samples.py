"""Seed 003's sample messages, verbatim (shared/seeds/003): what every codec and session
test parses. One copy here, so a test never drifts from the seed."""

SEED_DEVICE_REGISTER = """{
    "type": "device_register",
    "data": {
        "device_id": "esp32_device_001",
        "device_type": "esp32s3",
        "firmware_version": "1.0.0",
        "capabilities": ["audio_input", "audio_output", "wifi"],
        "hardware_info": {
            "chip_model": "ESP32-S3",
            "chip_revision": "0",
            "cpu_freq": 240,
            "flash_size": 16777216,
            "psram_size": 8388608
        }
    },
    "timestamp": "2024-01-01T00:00:00Z"
}"""

SEED_AUDIO_DATA = """{
    "type": "audio_data",
    "data": {
        "device_id": "esp32_device_001",
        "audio_format": "wav",
        "sample_rate": 16000,
        "channels": 1,
        "bit_depth": 16,
        "duration_ms": 1500,
        "data": "base64_encoded_audio_data",
        "compression": "none"
    },
    "timestamp": "2024-01-01T00:00:00Z"
}"""

SEED_VOICE_COMMAND = """{
    "type": "voice_command",
    "data": {
        "device_id": "esp32_device_001",
        "command": "turn on the living room light",
        "confidence": 0.95,
        "language": "en",
        "processing_time_ms": 1200,
        "audio_duration_ms": 1500
    },
    "timestamp": "2024-01-01T00:00:00Z"
}"""

SEED_RESPONSE = """{
    "type": "response",
    "data": {
        "device_id": "esp32_device_001",
        "text": "I'll turn on the living room light for you.",
        "audio_url": "http://YOUR_IP:8000/audio/response_123.wav",
        "audio_data": "base64_encoded_audio_data",
        "actions": [
            {
                "type": "homeassistant",
                "action": "turn_on",
                "entity_id": "light.living_room",
                "parameters": {}
            }
        ],
        "processing_time_ms": 2500
    },
    "timestamp": "2024-01-01T00:00:00Z"
}"""

SEED_ERROR = """{
    "type": "error",
    "data": {
        "device_id": "esp32_device_001",
        "error_code": "AUDIO_PROCESSING_FAILED",
        "error_message": "Failed to process audio data",
        "details": {
            "reason": "Invalid audio format",
            "expected_format": "wav",
            "received_format": "mp3"
        },
        "timestamp": "2024-01-01T00:00:00Z"
    }
}"""

SEED_PING = """{
    "type": "ping",
    "data": {
        "device_id": "esp32_device_001",
        "uptime": 3600,
        "memory_usage": 65,
        "cpu_usage": 45,
        "wifi_signal": -45,
        "free_heap": 204800
    },
    "timestamp": "2024-01-01T00:00:00Z"
}"""

SEED_STREAM_HEADER = """{
    "stream_id": "stream_123456",
    "format": "wav",
    "sample_rate": 16000,
    "channels": 1,
    "bit_depth": 16,
    "chunk_size": 1024,
    "total_chunks": 10
}"""

SEED_AUDIO_CHUNK = """{
    "stream_id": "stream_123456",
    "chunk_number": 1,
    "chunk_data": "base64_encoded_audio_data",
    "timestamp": "2024-01-01T00:00:00Z"
}"""
