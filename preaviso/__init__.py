"""Preaviso: advance notices to customers, from Kafka events to their inboxes."""

__version__ = "0.1.0"
