"""A small byte-level, decoder-only transformer language model (GPT style).

The tokens are the UTF-8 bytes of the text: a vocabulary of 256, no tokenizer to train, no
unknown tokens. The model reads up to ``context`` bytes and predicts, at every position, the
next byte.

    from factoryhub.helpers.lm.model import ByteLM, model_config
    model = ByteLM(model_config("tiny"))
    model.generate_text("The ", max_new_bytes=80)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

VOCAB_SIZE = 256


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a :class:`ByteLM`.

    ``layers`` transformer blocks of ``heads`` attention heads over ``embedding``-wide vectors;
    ``context`` is the longest input (in bytes) the model sees at once; ``dropout`` applies to
    attention weights and residual branches while training.
    """

    layers: int = 4
    heads: int = 4
    embedding: int = 128
    context: int = 128
    dropout: float = 0.0
    vocab_size: int = VOCAB_SIZE

    def __post_init__(self) -> None:
        for name in ("layers", "heads", "embedding", "context", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.embedding % self.heads:
            raise ValueError(
                f"embedding ({self.embedding}) must be a multiple of heads ({self.heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain values (for JSON and checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A configuration from :meth:`to_dict`'s output; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


#: Preset sizes, as offered by the notebooks and the batch job (``--size``).
SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(layers=2, heads=2, embedding=64, context=64),
    "small": ModelConfig(layers=4, heads=4, embedding=128, context=128),
    "medium": ModelConfig(layers=6, heads=6, embedding=384, context=256, dropout=0.1),
}


def model_config(size: str = "tiny", **overrides: Any) -> ModelConfig:
    """The preset ``size`` (one of :data:`SIZES`) with ``overrides`` (``None`` values are
    ignored), e.g. ``model_config("small", context=256)``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return replace(SIZES[size], **{k: v for k, v in overrides.items() if v is not None})


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which a position sees only itself and earlier ones."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.embedding, 3 * config.embedding)
        self.proj = nn.Linear(config.embedding, config.embedding)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(batch, length, width)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """A pre-norm transformer block: attention, then a 4x-wide MLP, each on a residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.embedding)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.embedding)
        self.mlp = nn.Sequential(
            nn.Linear(config.embedding, 4 * config.embedding),
            nn.GELU(),
            nn.Linear(4 * config.embedding, config.embedding),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ByteLM(nn.Module):
    """The language model: byte and position embeddings, ``layers`` blocks, a final norm and
    an output layer that shares its weights with the byte embedding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.embedding)
        self.pos_emb = nn.Embedding(config.context, config.embedding)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.embedding)
        self.head = nn.Linear(config.embedding, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        for name, param in self.named_parameters():  # GPT-2: scaled residual projections
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """The number of trainable parameters (the tied output layer counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``idx``: ``(batch, length)`` byte ids, ``length <= context``. Returns the logits
        ``(batch, length, 256)`` and, when ``targets`` (same shape as ``idx``) are given, the
        mean cross-entropy in nats per byte."""
        length = idx.shape[1]
        if length > self.config.context:
            raise ValueError(f"input of {length} bytes is longer than the context")
        pos = torch.arange(length, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 40,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``idx`` (``(batch, length)`` byte ids) by ``max_new_tokens`` sampled bytes;
        ``temperature`` 0 picks the most likely byte every time."""
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                window = idx[:, -self.config.context :]
                logits, _ = self(window)
                logits = logits[:, -1, :].float()
                if temperature <= 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.size(-1):
                        kth = torch.topk(logits, top_k).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = F.softmax(logits, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=generator)
                idx = torch.cat([idx, nxt], dim=1)
        finally:
            self.train(was_training)
        return idx

    def generate_text(
        self,
        prompt: str,
        max_new_bytes: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 40,
        seed: int | None = None,
    ) -> str:
        """``prompt`` followed by ``max_new_bytes`` sampled bytes, decoded as UTF-8 (bytes
        that do not form valid UTF-8 show as U+FFFD). ``seed`` makes the sample repeatable."""
        device = next(self.parameters()).device
        data = list(prompt.encode("utf-8")) or [ord("\n")]
        idx = torch.tensor([data], dtype=torch.long, device=device)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
        out = self.generate(idx, max_new_bytes, temperature, top_k, generator)
        start = 0 if prompt else 1  # without the newline an empty prompt starts from
        return bytes(out[0, start:].tolist()).decode("utf-8", errors="replace")
