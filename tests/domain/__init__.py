"""The pure core: each lifecycle stage's decisions and state changes, deadlines, domain rules."""
