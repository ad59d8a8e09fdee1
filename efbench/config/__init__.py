"""The code that reads a Hydra config: the schema every key is checked against."""
