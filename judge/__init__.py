"""Constitutional LLM-as-judge: principles in YAML, judge backends, absolute and pairwise verdicts."""
