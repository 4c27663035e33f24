"""Models: safe loading and saving, tokenization with trigger masks, the one attention path."""

from trojanscope.models.attention import (AttentionForward, AttentionResult, attention_forward, extract_attention,
                                         trigger_share)
from trojanscope.models.backdoor import Backdoor, resolve_backdoor
from trojanscope.models.representation import classify_hidden, sentence_representation
from trojanscope.models.loading import (
    BUILTIN_MODELS,
    CARD_NAME,
    LoadedModel,
    ModelCard,
    load_model,
    load_tokenizer,
    read_card,
    resolve_source,
    save_model,
)
from trojanscope.models.planted import PlantedAttack, attack_of, planted_attack, resolve_target
from trojanscope.models.tokens import Encoded, Tokenized, encode, model_max_length_of, pad, tokenize

__all__ = [
    "AttentionForward", "AttentionResult", "attention_forward", "extract_attention", "trigger_share",
    "Backdoor", "resolve_backdoor", "classify_hidden", "sentence_representation",
    "BUILTIN_MODELS", "CARD_NAME", "LoadedModel", "ModelCard", "load_model", "load_tokenizer",
    "PlantedAttack", "attack_of", "planted_attack", "resolve_target", "read_card", "resolve_source", "save_model",
    "Encoded", "Tokenized", "encode", "model_max_length_of", "pad", "tokenize",
]
