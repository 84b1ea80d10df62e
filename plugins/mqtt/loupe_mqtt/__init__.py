"""Loupe MQTT reporter: every result published on the plant's message bus (paho-mqtt 2)."""
