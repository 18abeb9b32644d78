"""Reward functions in the forms RL trainers call: TRL, OpenRLHF, veRL."""
