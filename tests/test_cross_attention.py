"""Tests of the CSC cross-view attention and the view reshaping helpers."""

import pytest
import torch

from speechbrain_ext.lobes import CrossViewAttention, stack_views, unstack_views

BATCH, QUERY, MEMORY = 3, 8, 6


def random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def attention(**kwargs):
    torch.manual_seed(0)
    return CrossViewAttention(QUERY, MEMORY, num_heads=2, **kwargs).eval()


def test_unstack_follows_speechbrain_row_order():
    # Rows: [view 0 of targets 0..2; view 1 of targets 0..2], [6, 1, 2].
    stacked = torch.arange(12.0).reshape(6, 1, 2)
    per_target = unstack_views(stacked, n_views=2)
    assert per_target.shape == (3, 2, 1, 2)
    for b in range(3):
        for v in range(2):
            assert torch.equal(per_target[b, v], stacked[v * 3 + b])
    assert torch.equal(stack_views(per_target), stacked)


def test_unstack_rejects_indivisible_rows():
    with pytest.raises(ValueError, match="7 rows into 2 views"):
        unstack_views(torch.zeros(7, 4), n_views=2)


@pytest.mark.parametrize("query", ["others", "learned"])
@pytest.mark.parametrize("n_views", [2, 4])
def test_utterance_level_shapes_and_no_self_attention(n_views, query):
    module = attention(query=query)
    embeddings = random(BATCH, n_views, QUERY)
    memory = random(BATCH, n_views, MEMORY, seed=1)
    g, weights = module(memory, embeddings=embeddings, return_attention=True)
    assert g.shape == (BATCH, n_views, QUERY)
    assert weights.shape == (BATCH, n_views, n_views)
    assert torch.allclose(weights.sum(-1), torch.ones(BATCH, n_views))
    assert (weights.diagonal(dim1=1, dim2=2) == 0).all()
    off_diagonal = ~torch.eye(n_views, dtype=torch.bool)
    assert (weights[:, off_diagonal] > 0).all()


@pytest.mark.parametrize("query", ["others", "learned"])
@pytest.mark.parametrize("n_views", [2, 4])
def test_nothing_of_view_v_reaches_its_own_global_vector(n_views, query):
    """Neither view v's memory nor its embedding changes g_v: no copy path."""
    module = attention(query=query)
    embeddings = random(BATCH, n_views, QUERY)
    memory = random(BATCH, n_views, MEMORY, seed=1)
    g = module(memory, embeddings=embeddings)
    for v in range(n_views):
        memory_v = memory.clone()
        memory_v[:, v] += 5.0 * random(BATCH, MEMORY, seed=2 + v)
        embeddings_v = embeddings.clone()
        embeddings_v[:, v] += 5.0 * random(BATCH, QUERY, seed=9 + v)
        g_v = module(memory_v, embeddings=embeddings_v)
        assert torch.allclose(g_v[:, v], g[:, v], atol=1e-6)
        others = [w for w in range(n_views) if w != v]
        assert not torch.allclose(g_v[:, others], g[:, others])


def test_others_query_is_the_mean_of_the_other_embeddings():
    module = attention()
    embeddings = random(BATCH, 3, QUERY)
    queries = module.queries(embeddings, BATCH, 3)
    expected = (embeddings[:, 1] + embeddings[:, 2]) / 2
    assert torch.allclose(queries[:, 0], expected, atol=1e-6)
    learned = attention(query="learned")
    queries = learned.queries(None, BATCH, 3)
    assert torch.equal(queries[1, 2], learned.learned_query.detach())


def test_two_views_return_the_projected_other_view():
    # With V = 2 each query has a single key: softmax weight 1, so
    # g_v = out_proj(W_v m_other + b_v) whatever the query.
    module = attention()
    mha = module.attention
    embeddings = random(BATCH, 2, QUERY)
    memory = random(BATCH, 2, MEMORY, seed=1)
    values = memory @ mha.v_proj_weight.T + mha.in_proj_bias[2 * QUERY :]
    expected = mha.out_proj(values.flip(1))
    g = module(memory, embeddings=embeddings)
    assert torch.allclose(g, expected, atol=1e-6)


def test_frame_level_masks_self_and_padding():
    n_views, n_frames = 3, 10
    module = attention()
    embeddings = random(BATCH, n_views, QUERY)
    frames = random(BATCH, n_views, n_frames, MEMORY, seed=1)
    # Target 0: all full; target 1: view 2 has 4 valid frames; target 2:
    # view 0 has 7.
    lengths = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.4], [0.7, 1.0, 1.0]])
    g, weights = module(frames, lengths, embeddings, return_attention=True)
    assert g.shape == (BATCH, n_views, QUERY)
    assert weights.shape == (BATCH, n_views, n_views, n_frames)
    assert torch.allclose(weights.sum((-2, -1)), torch.ones(BATCH, n_views))
    for v in range(n_views):
        assert (weights[:, v, v] == 0).all()
    assert (weights[1, :, 2, 4:] == 0).all()
    assert (weights[1, :2, 2, :4] > 0).all()
    assert (weights[2, :, 0, 7:] == 0).all()
    assert (weights[0][~torch.eye(n_views, dtype=torch.bool)] > 0).all()

    # Changing padding frames changes nothing; changing a valid frame of
    # view 2 changes the other views' vectors but not view 2's own.
    padded = frames.clone()
    padded[1, 2, 4:] = 100.0
    padded[2, 0, 7:] = -100.0
    assert torch.allclose(module(padded, lengths, embeddings), g, atol=1e-6)
    valid = frames.clone()
    valid[1, 2, 0] += 3.0
    g_valid = module(valid, lengths, embeddings)
    assert torch.allclose(g_valid[1, 2], g[1, 2], atol=1e-6)
    assert not torch.allclose(g_valid[1, :2], g[1, :2])


def test_accepts_speechbrain_embedding_layout_and_passes_gradients():
    module = attention()
    stacked = random(2 * BATCH, 1, QUERY).requires_grad_()  # [V*B, 1, D]
    frames = random(2 * BATCH, 5, MEMORY, seed=1).requires_grad_()
    g = module(unstack_views(frames, 2), embeddings=unstack_views(stacked, 2))
    assert g.shape == (BATCH, 2, QUERY)
    stack_views(g).square().sum().backward()
    assert stacked.grad.abs().sum() > 0 and frames.grad.abs().sum() > 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_heads"):
        CrossViewAttention(QUERY, num_heads=3)
    with pytest.raises(ValueError, match="query must be"):
        CrossViewAttention(QUERY, num_heads=2, query="own")
    module = attention()
    with pytest.raises(ValueError, match="at least 2 views"):
        module(random(BATCH, 1, MEMORY), embeddings=random(BATCH, 1, QUERY))
    with pytest.raises(ValueError, match="embeddings must be"):
        module(random(BATCH, 2, MEMORY), embeddings=random(BATCH, 3, QUERY))
    with pytest.raises(ValueError, match="needs the views' embeddings"):
        module(random(BATCH, 2, MEMORY))
    with pytest.raises(ValueError, match="memory must be"):
        module(random(BATCH, 2), embeddings=random(BATCH, 2, QUERY))
    with pytest.raises(ValueError, match="lengths must be"):
        module(
            random(BATCH, 2, 4, MEMORY),
            torch.ones(2 * BATCH),
            random(BATCH, 2, QUERY),
        )
