"""The ``induction`` task: TinyStories-like generated stories and the paper's induction metric.

Importing this package registers :class:`InductionTask` under the name
``"induction"``. Modules, in data-flow order:

    lexicon   places, things, animals, feelings (plain data)
    names     first names from faker; made-up two-token test names
    writer    sentence templates, characters, dialogue
    stories   the story generator (twelve story shapes)
    bpe       byte-level BPE training -> tiktoken.Encoding; cl100k (optional)
    corpus    stories files, finding and renaming names, token positions, statistics
    metric    induction success and friends, as pure functions + model evaluation
    task      InductionConfig and InductionTask (the registry entry)

Example:
    >>> from generators import registry
    >>> registry.get("induction").objective
    'induction_success'
"""

from .corpus import annotate, read_stories_file
from .metric import copy_predictor, score_predictions, scored_occurrences
from .stories import generate_story
from .task import InductionConfig, InductionTask

__all__ = ["InductionConfig", "InductionTask", "annotate", "copy_predictor", "generate_story", "read_stories_file",
           "score_predictions", "scored_occurrences"]
