"""Notifications from decision to delivery: rules, channels, daytime, digests."""
