"""The paper and headline reproductions."""
