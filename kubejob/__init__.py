"""What the three services share: the message contract, the broker settings, logging.

Each image copies this package in beside its own, so every fact here has one home.
"""
