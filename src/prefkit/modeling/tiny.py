"""Tiny, local, deterministic models and tokenizers: the same code path as real Hugging Face models, built in
seconds on a CPU with no network. Tests, benchmarks and the demo use them; nothing here is a mock."""

from __future__ import annotations

from typing import Iterable

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]


def tiny_tokenizer(corpus: Iterable[str], vocab_size: int = 512, chat_template: str = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer trained on `corpus`, with BOS `<s>`, EOS `<|end|>`, PAD `<pad>` and a chat
    template whose assistant turn ends with the EOS token (as ChatML-style templates do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = chat_template
    return fast


def tiny_llama(vocab_size: int, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 512,
               seed: int = 0, tokenizer=None):
    """A randomly initialised Llama-architecture causal LM (transformers' LlamaConfig), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=False)
    if tokenizer is not None:
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
