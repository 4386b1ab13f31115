"""A tiny causal LM and character tokenizer built in code: for tests, the offline demo and notebooks' tiny mode.

No hub access: the tokenizer is a character-level ``tokenizers`` model with a ChatML-style chat template, the
model a 2-layer ``Qwen2`` with random weights (seeded).
"""

from __future__ import annotations

import json
import os
import string

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


def build_tokenizer():
    """A character-level PreTrainedTokenizerFast with a ChatML chat template; pad and eos are set."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + list(dict.fromkeys(ALPHABET)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


# Tokenizer classes that mean "the tokenizer.json as saved", with no model-specific behaviour on top.
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def saved_tokenizer_is_generic(folder: str) -> bool:
    """Whether ``folder`` holds a ``tokenizer.json`` saved under a generic class (no model-specific tokenizer)."""
    config_path = os.path.join(folder, "tokenizer_config.json")
    if not (os.path.isfile(config_path) and os.path.isfile(os.path.join(folder, "tokenizer.json"))):
        return False
    with open(config_path, encoding="utf-8") as f:
        return json.load(f).get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES


def load_saved_tokenizer(folder: str, **kwargs):
    """The tokenizer saved in ``folder``, as it was saved.

    ``AutoTokenizer`` (transformers 5) replaces a saved generic class by the model type's own class for some model
    types (``qwen2`` among them), so ``build_tokenizer()`` saved next to the tiny Qwen2 model came back as a
    ``Qwen2Tokenizer`` that drops spaces and newlines ("ab c\\nd" -> 4 ids instead of 6). A generic class in
    ``tokenizer_config.json`` is therefore loaded as ``PreTrainedTokenizerFast``; anything else by ``AutoTokenizer``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if saved_tokenizer_is_generic(folder):
        return PreTrainedTokenizerFast.from_pretrained(folder, **kwargs)
    return AutoTokenizer.from_pretrained(folder, **kwargs)


def build_tool_tokenizer():
    """A character tokenizer with Qwen3's chat template and tool-call tokens, so TRL parses tool calls."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen3_chat_template

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
    markup = ["<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>"]
    vocab = {t: i for i, t in enumerate(specials + markup + list(dict.fromkeys(ALPHABET)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|endoftext|>", unk_token="<unk>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tok.add_tokens(markup)
    tok.chat_template = qwen3_chat_template
    tok.padding_side = "left"
    return tok


def build_model(tokenizer=None, hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    """A randomly initialised (seeded) 2-layer Qwen2 causal LM sized for ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = tokenizer or build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
