"""Verifiable rewards: checkers that say whether a response is right (a math answer, a format, a QA answer), each
returning a Verdict with its score, its status and what it extracted, run with real time limits (pool.py)."""
