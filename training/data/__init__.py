"""Preference data in: sources, row shapes, the bad-row report and the prompt-disjoint split."""

from arbiter.training.data.load import LoadedData, load_preferences
from arbiter.training.data.schema import Comparison, PreferenceGroup
from arbiter.training.data.sources import SourceSpec

__all__ = ["Comparison", "LoadedData", "PreferenceGroup", "SourceSpec", "load_preferences"]
