"""Store-and-forward protocol between a van node and HQ (both ends).

Envelope, outbox, MQTT link, application-level acks.  Knows nothing about
pages or about what a record means: it ships sealed bytes.
"""
