"""Spark code of lstmad: the session factory and pure DataFrame → DataFrame transforms."""
