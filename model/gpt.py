"""A decoder-only transformer in the style of nanoGPT / GPT-2.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP -> residual), attention through
`F.scaled_dot_product_attention`, learned absolute positions, input embedding tied to the output projection.

Optional document masking: in a packed block every document ends with `eos_id`; with `doc_mask=True` a token
attends only to earlier tokens of its own document (the EOS closing a document still belongs to it) and positions
restart at 0 at every document, so a document packed at any offset of a block gets exactly the logits it gets alone.
The mask is dense (`scaled_dot_product_attention` with a (B, 1, T, T) boolean mask) unless `attention` is `flex`
(or `auto` on CUDA), which uses `torch.nn.attention.flex_attention` with a block mask: the same result, computed
block-sparse (fused when the model is compiled).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 50257      # real vocabulary (from the packed manifest)
    block_size: int = 1024       # context length
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True            # biases in Linear and LayerNorm (GPT-2 has them)
    vocab_pad_to: int = 64       # round the embedding table up to a multiple of this (faster matmuls)
    doc_mask: bool = False       # block attention across documents at EOS positions
    eos_id: int | None = None    # needed when doc_mask is on
    attention: str = "auto"      # doc_mask kernel: auto (flex on CUDA, dense mask elsewhere), dense, flex

    @property
    def padded_vocab_size(self) -> int:
        m = max(1, int(self.vocab_pad_to))
        return ((self.vocab_size + m - 1) // m) * m

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


ATTENTION_KINDS = ("auto", "dense", "flex")


def document_ids(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) document number of every position: the number of EOS tokens strictly before it, so an EOS closes its
    own document."""
    is_eos = (idx == eos_id).to(torch.int32)
    return torch.cumsum(is_eos, dim=1) - is_eos


def document_positions(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) position of every token inside its document: 0 right after an EOS (and at the block start)."""
    B, T = idx.shape
    t = torch.arange(T, device=idx.device).expand(B, T)
    # index of the last EOS at or before t, shifted one to the right: the last EOS strictly before t (or -1)
    last = torch.where(idx == eos_id, t, torch.full_like(t, -1)).cummax(dim=1).values
    prev = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)
    return t - prev - 1


def document_attention_mask(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Boolean mask (B, 1, T, T), True where query i may attend key j: j <= i and both in the same document."""
    T = idx.size(1)
    doc = document_ids(idx, eos_id)
    same_doc = doc.unsqueeze(2) == doc.unsqueeze(1)                   # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return (same_doc & causal).unsqueeze(1)


def flex_document_mask(idx: torch.Tensor, eos_id: int):
    """The same mask as a flex_attention BlockMask: blocks of the (T, T) grid that no query may use are skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc = document_ids(idx, eos_id)

    def mask_mod(b, h, q, kv):
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    B, T = idx.shape
    return create_block_mask(mask_mod, B, None, T, T, device=idx.device)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean next-token cross-entropy in nats over positions whose target != ignore_index."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=ignore_index)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):  # a flex_attention BlockMask
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, block_mask=attn_mask)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.doc_mask and cfg.eos_id is None:
            raise ValueError("doc_mask needs eos_id")
        if cfg.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {cfg.attention!r}")
        self.config = cfg
        V = cfg.padded_vocab_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, V, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embeddings (the tied token embedding is counted once,
        since as the output layer it does cost compute)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        mask = None
        if self.config.doc_mask:
            pos = document_positions(idx, self.config.eos_id)                # (B, T): restarts per document
            use_flex = self.config.attention == "flex" or (self.config.attention == "auto" and idx.is_cuda)
            mask = (flex_document_mask if use_flex else document_attention_mask)(idx, self.config.eos_id)
        else:
            pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, mask)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        return logits, lm_loss(logits, targets)

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.AdamW:
        """AdamW; weight decay on matrices (Linear weights, embeddings), none on biases and LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N for the weights (forward 2N + backward 4N) plus the attention scores and
        their weighted sum, 12 * n_layer * n_embd * T (PaLM appendix B; nanoGPT's estimate_mfu). With T = 1024 the
        second term is ~15% of 6N for GPT-2 124M."""
        c = self.config
        T = c.block_size if seq_len is None else int(seq_len)
        return 6.0 * self.num_params() + 12.0 * c.n_layer * c.n_embd * T

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample `max_new_tokens` continuations of idx (B, T). temperature 0 = greedy."""
        V = self.config.vocab_size
        for _ in range(max_new_tokens):
            ctx = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(ctx)
            logits = logits[:, -1, :V].float()  # padded vocab entries are never real tokens
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(int(top_k), V)).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx
