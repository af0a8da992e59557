"""negmine plugin of the Audio CLEVRGAN reference example (task and `negmine data` commands are added here)."""
