"""GPT model: loss against a from-scratch cross-entropy, document masking, weight tying, sampling."""
import math

import torch

from model.gpt import GPT, GPTConfig, document_attention_mask, document_positions, lm_loss

torch.set_num_threads(1)


def tiny(**kw):
    args = dict(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=32, vocab_pad_to=64)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))


def scratch_cross_entropy(logits, targets, ignore_index=-1):
    """Mean -log softmax(logits)[target] in float64, with an explicit max-shifted log-sum-exp."""
    total, n = 0.0, 0
    flat = logits.reshape(-1, logits.size(-1)).double().tolist()
    for row, t in zip(flat, targets.reshape(-1).tolist()):
        if t == ignore_index:
            continue
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        total += lse - row[t]
        n += 1
    return total / n


def test_loss_equals_scratch_cross_entropy():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 61, (3, 16), generator=g)
    tgt = torch.randint(0, 61, (3, 16), generator=g)
    logits, loss = model(idx, tgt)
    assert logits.shape == (3, 16, 64)  # padded vocab
    assert abs(loss.item() - scratch_cross_entropy(logits.detach(), tgt)) < 1e-5
    # an untrained model is close to uniform over the padded vocabulary
    assert abs(loss.item() - math.log(64)) < 0.3
    tgt[0, :5] = -1  # ignored positions do not count
    assert abs(lm_loss(logits, tgt).item() - scratch_cross_entropy(logits.detach(), tgt)) < 1e-5


def test_document_attention_mask_layout():
    eos = 9
    idx = torch.tensor([[1, 2, eos, 3, 4, eos, 5]])
    m = document_attention_mask(idx, eos)[0, 0]
    doc = [0, 0, 0, 1, 1, 1, 2]  # the EOS closing a document belongs to it
    for i in range(7):
        for j in range(7):
            assert bool(m[i, j]) == (j <= i and doc[i] == doc[j]), (i, j)


def test_doc_mask_stops_attention_across_documents():
    eos = 60
    base = torch.tensor([[5, 6, 7, 8, eos, 11, 12, 13, 14, 15, eos, 20]])
    changed = base.clone()
    changed[0, 1] = 33  # edit inside the first document
    for doc_mask, same_after in ((True, True), (False, False)):
        model = tiny(doc_mask=doc_mask, eos_id=eos).eval()
        with torch.no_grad():
            a, _ = model(base, base)
            b, _ = model(changed, changed)
        # positions 5.. belong to later documents
        assert torch.allclose(a[0, 5:], b[0, 5:], atol=1e-6) == same_after
        assert not torch.allclose(a[0, 1:5], b[0, 1:5], atol=1e-6)  # the edited document does change
        assert torch.allclose(a[0, :1], b[0, :1], atol=1e-6)  # causal: earlier positions never change


def test_weight_tying_and_param_count():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    n_all = sum(p.numel() for p in model.parameters())
    assert model.num_params() == n_all - 16 * 32
    # 6N plus the attention term 12 * n_layer * n_embd * T
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * 32 * 16
    assert model.flops_per_token(seq_len=8) == 6 * model.num_params() + 12 * 2 * 32 * 8


def test_attention_term_of_gpt2_124m_is_about_15_percent():
    with torch.device("meta"):
        m = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    six_n = 6 * m.num_params()
    assert 0.14 < (m.flops_per_token() - six_n) / six_n < 0.16


def test_document_positions_restart_after_every_eos():
    eos = 9
    idx = torch.tensor([[1, 2, eos, 3, 4, eos, 5], [eos, eos, 1, 2, 3, 4, 5]])
    assert document_positions(idx, eos).tolist() == [[0, 1, 2, 0, 1, 2, 0], [0, 0, 0, 1, 2, 3, 4]]


def _packed_and_alone(attention):
    """A 9-token document (its EOS included) at offset 44 of a 64-token block behind other documents, and alone."""
    eos = 60
    g = torch.Generator().manual_seed(5)
    doc = torch.cat([torch.randint(0, 60, (8,), generator=g), torch.tensor([eos])])
    before = torch.randint(0, 60, (44,), generator=g)
    before[[10, 25, 43]] = eos                        # three documents end before it, the last right before
    after = torch.randint(0, 60, (64 - 44 - 9,), generator=g)
    block = torch.cat([before, doc, after]).unsqueeze(0)
    model = tiny(block_size=64, doc_mask=True, eos_id=eos, attention=attention).eval()
    with torch.no_grad():
        packed, _ = model(block, block)
        alone, _ = model(doc.unsqueeze(0), doc.unsqueeze(0))
    return packed[0, 44:53], alone[0]


def test_packed_document_gets_the_logits_it_gets_alone():
    packed, alone = _packed_and_alone("dense")
    assert packed.shape == alone.shape == (9, 64)
    assert (packed - alone).abs().max().item() < 1e-5
    # without position restarts (the old model) the same document's logits differ: the test can fail
    eos = 60
    model = tiny(block_size=64, doc_mask=False).eval()
    block = torch.cat([torch.randint(0, 60, (44,)), torch.tensor([1, 2, 3, eos])]).unsqueeze(0)
    with torch.no_grad():
        a, _ = model(block, block)
        b, _ = model(block[:, 44:], block[:, 44:])
    assert (a[0, 44:] - b[0]).abs().max().item() > 1e-3


def test_flex_attention_document_mask_equals_the_dense_mask():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": the unfused path
        packed_flex, alone_flex = _packed_and_alone("flex")
    packed_dense, _ = _packed_and_alone("dense")
    assert (packed_flex - alone_flex).abs().max().item() < 1e-5
    assert (packed_flex - packed_dense).abs().max().item() < 1e-5


def test_generate_greedy_and_top1_agree_and_stay_in_vocab():
    model = tiny().eval()
    start = torch.tensor([[1, 2, 3]])
    greedy = model.generate(start, 20, temperature=0)
    top1 = model.generate(start, 20, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert greedy.shape == (1, 23)
    assert torch.equal(greedy, top1)
    sampled = model.generate(start.repeat(4, 1), 30, temperature=2.0, generator=torch.Generator().manual_seed(3))
    assert int(sampled.max()) < 61  # padded ids are never produced


def test_conf_model_sizes():
    """conf/model/*.yaml: every file loads through the trainer's config and builds the size its name promises
    (parameters on the meta device: nothing is allocated)."""
    import glob
    import os

    from model.train import build_config

    conf_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "model")
    sizes = {}
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.yaml"))):
        cfg = build_config(path, [])
        keys = ("block_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "vocab_pad_to")
        with torch.device("meta"):
            model = GPT(GPTConfig(vocab_size=50257, **{k: cfg[k] for k in keys}))
        total = sum(p.numel() for p in model.parameters())
        body = total - model.transformer.wte.weight.numel() - model.transformer.wpe.weight.numel()
        sizes[os.path.basename(path)] = (total, body)
    assert {"tiny.yaml", "small10m.yaml", "gpt2-124m.yaml"} <= set(sizes)
    # GPT-2 small: 124M with the tied 50257-token embedding (padded to 50304, as nanoGPT)
    assert 123e6 < sizes["gpt2-124m.yaml"][0] < 125.5e6
    assert 9.5e6 < sizes["small10m.yaml"][1] < 11.5e6   # ~10M non-embedding parameters
    assert sizes["tiny.yaml"][1] < 1e6                  # trains in minutes on 2 CPU cores
