"""Prediction-only snapshots of weights (batch norm folded into the hidden layers' linear maps, number
embeddings stacked): the same outputs as the weights themselves, and never stale after a change."""
import torch

from lamina.config import Hidden
from lamina.network import Block
from lamina.features.snapshot import Snapshot


def layer(seed: int = 0) -> Block:
    torch.manual_seed(seed)
    block = Block(12, Hidden(layers=1, size=16, dropout=0.0))
    with torch.no_grad():  # running statistics other than (0, 1), so that folding them matters
        norm = block.layer[1]
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return block.eval()


def unfolded(block: Block, x: torch.Tensor) -> torch.Tensor:
    linear, norm, activation, _ = block.layer
    return activation(norm(linear(x)))


def test_a_folded_hidden_layer_predicts_what_its_linear_map_and_batch_norm_give():
    block, x = layer(), torch.randn(64, 12)
    with torch.no_grad():
        reference = unfolded(block, x)
        folded = block(x)
        assert block.folded.value is not None  # the fold was used
    # one product W x with W scaled by row against (W x) scaled: float32 rounding of sums of 12 terms
    torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), reference, rtol=1e-5, atol=1e-5)


def test_the_fold_follows_every_change_of_the_weights():
    block, x = layer(), torch.randn(8, 12)
    with torch.no_grad():
        block(x)
    other = layer(seed=1)
    block.load_state_dict(other.state_dict())  # new weights and statistics, copied in place
    with torch.inference_mode():
        torch.testing.assert_close(block(x), unfolded(other, x), rtol=1e-5, atol=1e-5)
    # a fused optimizer changes weights without bumping their version counters; the training forward
    # before its step drops the fold
    block.train()
    optimizer = torch.optim.AdamW(block.parameters(), lr=0.5, fused=True)
    block(torch.randn(32, 12)).sum().backward()
    optimizer.step()
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), unfolded(block, x), rtol=1e-5, atol=1e-5)
    # batch-norm statistics re-estimated in place with the norm in training mode (autograd off) are seen
    block.layer[1].train()
    with torch.no_grad():
        block(torch.randn(32, 12) * 3 + 1)
    block.layer[1].eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), unfolded(block, x), rtol=1e-5, atol=1e-5)


def test_with_autograd_on_the_weights_themselves_are_used_and_gradients_reach_them():
    block, x = layer(), torch.randn(8, 12)
    with torch.no_grad():
        block(x)
    output = block(x)  # eval mode, autograd on: no snapshot
    assert block.folded.value is None
    output.sum().backward()
    assert block.layer[0].weight.grad is not None and block.layer[1].weight.grad is not None


def test_a_snapshot_is_rebuilt_when_a_source_changes_and_only_with_autograd_off():
    source, made = torch.ones(3), []
    snapshot = Snapshot()

    def make():
        made.append(1)
        return source * 2

    with torch.no_grad():
        assert torch.equal(snapshot.get([source], make), torch.full((3,), 2.0))
        snapshot.get([source], make)
        assert len(made) == 1
        source.add_(1)  # an in-place change bumps the version counter
        assert torch.equal(snapshot.get([source], make), torch.full((3,), 4.0)) and len(made) == 2
    assert snapshot.get([source], make) is None and snapshot.value is None  # autograd on: dropped
