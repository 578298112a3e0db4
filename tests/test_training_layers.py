"""Layer dropping: keeping the bottom N layers of an encoder is exactly its first N layers' output."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import BertConfig, BertModel  # noqa: E402

from training.model import keep_bottom_layers  # noqa: E402

pytestmark = pytest.mark.train


def _tiny(layers: int) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    return BertModel(cfg, add_pooling_layer=False).eval()


def test_bottom_layers_are_kept_and_compute_what_they_did() -> None:
    full = _tiny(4)
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 4, 2, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        want = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        keep_bottom_layers(full, 2)
        got = full(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(full.encoder.layer) == 2 and full.config.num_hidden_layers == 2
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("n", [0, 5])
def test_impossible_depths_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 4"):
        keep_bottom_layers(_tiny(4), n)
