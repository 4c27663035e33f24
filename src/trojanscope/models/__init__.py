"""Models: safe loading and saving, tokenization with trigger masks, the one attention path."""

from trojanscope.models.attention import (AttentionForward, AttentionResult, attention_forward, extract_attention,
                                         trigger_share)
from trojanscope.models.heads import classify_hidden
from trojanscope.models.loading import (
    BUILTIN_MODELS,
    CARD_NAME,
    LoadedModel,
    ModelCard,
    load_model,
    load_tokenizer,
    planted_attack,
    read_card,
    resolve_source,
    save_model,
)
from trojanscope.models.tokens import Encoded, Tokenized, encode, model_max_length_of, pad, tokenize

__all__ = [
    "AttentionForward", "AttentionResult", "attention_forward", "extract_attention", "trigger_share",
    "classify_hidden",
    "BUILTIN_MODELS", "CARD_NAME", "LoadedModel", "ModelCard", "load_model", "load_tokenizer",
    "planted_attack", "read_card", "resolve_source", "save_model",
    "Encoded", "Tokenized", "encode", "model_max_length_of", "pad", "tokenize",
]
