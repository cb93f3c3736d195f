"""The ``transformer`` learner: a pretrained encoder fine-tuned for sentence pairs, fully or with LoRA / IA3.

Its modules: :mod:`.config` (settings, and the models the ``model`` setting names), :mod:`.loading`
(tokenizers, classification models, adapters), :mod:`.pairs` (pairs tokenized once),
:mod:`.learner` (fit, predict, save, load) and :mod:`.first_token` (the last layer run for the first
token only). Importing this package registers the kind.
"""

from sizewise.learners.transformer.config import (
    DEFAULT_LEARNING_RATES,
    PACKAGED_MODELS,
    TransformerConfig,
    resolve_model,
)
from sizewise.learners.transformer.first_token import first_token_last_layer
from sizewise.learners.transformer.learner import TransformerLearner
from sizewise.learners.transformer.loading import (
    LORA_TARGET_MODULES,
    adapter_is_merged,
    default_target_modules,
    merge_adapter_for_prediction,
)
from sizewise.learners.transformer.pairs import TokenizedPairs

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "LORA_TARGET_MODULES",
    "PACKAGED_MODELS",
    "TokenizedPairs",
    "TransformerConfig",
    "TransformerLearner",
    "adapter_is_merged",
    "default_target_modules",
    "first_token_last_layer",
    "merge_adapter_for_prediction",
    "resolve_model",
]
