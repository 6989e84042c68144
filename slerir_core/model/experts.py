"""A routed stage: C parameter-independent experts, each a whole stack of transformer blocks.

Three ways to run a stage (§3.2):

* ``soft`` (training phase 1): ``sum_j p_j * E_j(x)``. With ``gradients="argmax"`` (§4.1, the default) only
  each sample's argmax expert carries gradients; the other experts' outputs count in the sum but are
  detached, so no gradient reaches their parameters (or, through them, earlier layers). With
  ``gradients="all"`` (§3.2's reading) every expert learns from every sample in proportion to p. The
  router learns through p either way.
* ``hard`` (phase 2 and inference) and ``manual`` (routes from the caller): each sample goes through
  one expert.

The C experts of a stage are stored stacked: one module tree of the shape of one expert whose every parameter
has a leading axis of C (``RoutedStage.stacked``). Every sample reads its own expert's weights by index
(``grouped_forward``): one call per op over the whole batch, on the routed kernels on a GPU and their PyTorch
twins elsewhere. Nothing is read back to the host and every shape is fixed by the batch, whatever the routes:
a GPU never waits for the host to learn how many samples chose an expert, and no new convolution shape
appears when the mix of routes changes. Stored apart, the experts' weights had to be stacked anew at every
forward and unstacked in the backward (about 860 of a training step's 6,500 dispatched ops). Weights files
keep one entry per expert (``experts.<j>.<name>``, as ``RoutedStage.expert(j)`` names its parameters): the
state-dict hooks split the stacks on saving and stack the entries on loading.

A batch of one, or a batch that all goes through one expert the host knows, runs plain convolutions with that
expert's weights, the ops and memory layouts of an expert of its own: at 512² on a 2-core CPU the batched
products of the grouped ops took 1.5x to 2x longer.

Soft routing on a CPU with ``skip_below > 0`` is the one exception to "no host reads": there an unchosen
expert whose probability for a sample is below ``skip_below`` does not run for it, which needs the shapes of
the samples that remain (host reads, free on a CPU). Once routing is sure that skips most of the mix (1.16x
to 1.25x faster training on a 2-core CPU); on other devices every expert runs on every sample.

In training, experts that no sample's gradient reaches get a zero gradient, not none: ``trained_experts``
says which experts learnt in the last forward, so that the optimiser can leave the others as they were
(``training.expert_updates``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kernels import routed_depthwise3x3, routed_pointwise, transposed_attention
from slerir_core.model.blocks import TransformerBlock, from_heads, to_heads


def make_expert(channels: int, heads: int, blocks: int, ffn_factor: float, bias: bool, ln_bias: bool) -> nn.Module:
    """One expert: ``blocks`` Restormer transformer blocks in sequence."""
    return nn.Sequential(*(TransformerBlock(channels, heads, ffn_factor, bias, ln_bias) for _ in range(blocks)))


class RoutedStage(nn.Module):
    """C experts of identical shape, stored stacked; which one runs is decided per sample.

    Args:
        experts: the expert modules, all of one structure, mapping (B, ch, H, W) to the same shape. Their
            parameters are copied into the stacks; the modules themselves are left as they were.

    Attributes:
        stacked: the first expert's module tree with each parameter replaced by the C experts' stacked along
            a new first axis. It gives the shapes and options; it cannot run as a module.
        num_experts: C.
        trained_experts: (C,) bool on the features' device, after a forward with autograd on: the experts
            whose parameters that forward gave gradients (nonzero ones or, for the others, zeros).
    """

    def __init__(self, experts: list[nn.Module]) -> None:
        super().__init__()
        self.num_experts = len(experts)
        self.stacked = copy.deepcopy(experts[0])
        named = [dict(expert.named_parameters()) for expert in experts]
        for name in named[0]:
            owner, _, leaf = name.rpartition(".")
            stack = torch.stack([n[name].detach() for n in named])
            setattr(self.stacked.get_submodule(owner), leaf, nn.Parameter(stack))
        self.trained_experts: torch.Tensor | None = None
        self.register_state_dict_post_hook(_split_stacks)
        self.register_load_state_dict_pre_hook(_stack_entries)

    def expert(self, index: int) -> nn.Module:
        """A standalone copy of expert ``index``: a module of its own, to run or inspect apart."""
        expert = copy.deepcopy(self.stacked)
        with torch.no_grad():
            for name, p in list(expert.named_parameters()):
                owner, _, leaf = name.rpartition(".")
                setattr(expert.get_submodule(owner), leaf, nn.Parameter(p[index].clone()))
        return expert

    def forward(
        self,
        x: torch.Tensor,
        routes: torch.Tensor,
        probs: torch.Tensor | None = None,
        gradients: str = "argmax",
        skip_below: float = 0.0,
    ) -> torch.Tensor:
        """Run the stage.

        Args:
            x: (B, ch, H, W) features.
            routes: (B,) expert index per sample (the argmax of ``probs`` in soft mode).
            probs: (B, C) expert probabilities for soft routing; ``None`` runs one expert a sample.
            gradients: soft routing only: ``argmax`` (only the chosen expert learns) or ``all``.
            skip_below: soft routing on a CPU only: an unchosen expert whose probability is below this does
                not run.
        """
        everyone = probs is not None and gradients == "all"
        if probs is not None and skip_below > 0 and x.device.type == "cpu":
            return self._soft_skipping(x, routes, probs, everyone, skip_below)
        if torch.is_grad_enabled():
            chosen = routes[:, None] == torch.arange(self.num_experts, device=routes.device)
            self.trained_experts = chosen.any(dim=0) | everyone
        if probs is None:
            return grouped_forward(self.stacked, x, routes)
        if everyone:
            return sum(
                probs[:, j, None, None, None].to(x.dtype) * grouped_forward(self.stacked, x, expert=j)
                for j in range(self.num_experts)
            )
        return self._soft_argmax(x, routes, probs)

    def _soft_argmax(self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Each sample's chosen expert with autograd, then the others, shifted round by one expert at a time,
        without: C grouped passes over the whole batch, whatever the routes."""
        count = self.num_experts
        shifted = (routes[:, None] + torch.arange(count, device=routes.device)) % count  # (B, C), chosen first
        mix = probs.gather(1, shifted).to(x.dtype)[:, :, None, None, None]
        out = mix[:, 0] * grouped_forward(self.stacked, x, routes)
        for k in range(1, count):
            with torch.no_grad():
                detached = grouped_forward(self.stacked, x, shifted[:, k])
            out = out + mix[:, k] * detached
        return out

    def _soft_skipping(
        self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor, everyone: bool, skip_below: float
    ) -> torch.Tensor:
        """Expert by expert, on the samples that need it: host reads decide the sub-batches."""
        out = 0.0
        learnt = []
        for j in range(self.num_experts):
            chosen = routes == j
            used = chosen | (probs[:, j] >= skip_below)
            learnt.append(used.any() if everyone else chosen.any())
            if not bool(used.any()):  # its term would be zero: no map to allocate, scale and add (or differentiate)
                continue
            learning = used if everyone else chosen
            y = x.new_zeros(x.shape)
            if bool((used & ~learning).any()):
                idx = (used & ~learning).nonzero().squeeze(1)
                with torch.no_grad():
                    detached = grouped_forward(self.stacked, x.index_select(0, idx), expert=j)
                y = y.index_copy(0, idx, detached.to(y.dtype))
            if bool(learning.any()):
                idx = learning.nonzero().squeeze(1)
                y = y.index_copy(0, idx, grouped_forward(self.stacked, x.index_select(0, idx), expert=j).to(y.dtype))
            out = out + probs[:, j, None, None, None].to(y.dtype) * y
        if torch.is_grad_enabled():
            self.trained_experts = torch.stack(learnt)
        return out


def _split_stacks(module: RoutedStage, state: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: each stack ``stacked.<name>`` becomes C entries ``experts.<j>.<name>``, views of it (as
    a state dict's entries alias the parameters)."""
    start = prefix + "stacked."
    stacks = {key[len(start) :]: state.pop(key) for key in list(state) if key.startswith(start)}
    for j in range(module.num_experts):
        for name, stack in stacks.items():
            state[f"{prefix}experts.{j}.{name}"] = stack[j]


def _stack_entries(module: RoutedStage, state: dict, prefix: str, *_: object) -> None:
    """Load-state-dict hook: the entries ``experts.<j>.<name>`` of all C experts become ``stacked.<name>``.

    A name that some expert lacks is left as it is, for the loader to report as missing and unexpected.
    """
    for name, _ in module.stacked.named_parameters():
        keys = [f"{prefix}experts.{j}.{name}" for j in range(module.num_experts)]
        if all(key in state for key in keys):
            state[f"{prefix}stacked.{name}"] = torch.stack([state.pop(key) for key in keys])


def grouped_forward(
    stacked: nn.Module, x: torch.Tensor, routes: torch.Tensor | None = None, expert: int | None = None
) -> torch.Tensor:
    """Run a batch through per-sample experts at once: sample b uses expert ``routes[b]``, or all use ``expert``.

    Every projection, depthwise convolution, normalisation and attention is one call over the whole
    batch, with each sample reading its expert's weights by index (the routed kernels on a GPU). The result
    equals running each group of samples through its expert; no value is read back to the host.

    Args:
        stacked: a stage's stacked experts (``RoutedStage.stacked``).
        x: (B, C, H, W) features.
        routes: (B,) expert index per sample, on the features' device.
        expert: instead of ``routes``, the one expert every sample goes through.
    """
    if (routes is None) == (expert is None):
        raise ValueError("give either routes or expert")
    for block in stacked:
        x = _grouped_block(block, x, routes, expert)
    return x


def _grouped_block(
    block: TransformerBlock, x: torch.Tensor, routes: torch.Tensor | None, expert: int | None
) -> torch.Tensor:
    """One transformer block of stacked experts over a batch of mixed routes, or of one expert."""
    # One expert for the batch, known on the host or the one sample's own, takes plain convolutions with its
    # weights: they keep the channels_last maps oneDNN runs fastest, which the batched products of the
    # routed ops copy to NCHW.
    own = expert is not None or x.shape[0] == 1

    def pick(stack: torch.Tensor) -> torch.Tensor:
        """The weights each sample reads: one expert's, or (B, ...) by route."""
        if expert is not None:
            return stack[expert]
        return stack.index_select(0, routes)[0] if own else stack[routes]

    def per_pixel(p: torch.Tensor) -> torch.Tensor:
        return pick(p).view(1 if own else x.shape[0], -1, 1, 1)

    def norm(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if module.bias is None:
            return h * torch.rsqrt(h.var(dim=1, keepdim=True, unbiased=False) + 1e-5) * per_pixel(module.weight)
        normed = F.layer_norm(h.permute(0, 2, 3, 1), h.shape[1:2], eps=1e-5).permute(0, 3, 1, 2)
        return torch.addcmul(per_pixel(module.bias), normed, per_pixel(module.weight))

    def conv(module: nn.Conv2d, h: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        depthwise = module.weight.shape[-1] == 3
        if not own:
            return (routed_depthwise3x3 if depthwise else routed_pointwise)(h, module.weight, routes, module.bias)
        weight, bias = pick(module.weight), None if module.bias is None else pick(module.bias)
        if rows is not None:
            weight, bias = weight[rows], None if bias is None else bias[rows]
        return F.conv2d(h, weight, bias, padding=1 if depthwise else 0, groups=h.shape[1] if depthwise else 1)

    attn, ffn = block.attn, block.ffn
    q, k, v = conv(attn.qkv_dw, conv(attn.qkv, norm(block.norm1, x))).chunk(3, dim=1)
    heads = attn.heads
    out = transposed_attention(to_heads(q, heads), to_heads(k, heads), to_heads(v, heads), pick(attn.temperature))
    x = x + conv(attn.proj, from_heads(out, *x.shape[-2:]))
    h = norm(block.norm2, x)
    if own:  # in halves, as GDFN does: GELU and the product ran 2.6x slower on the halves of one map
        hidden = ffn.project_out.weight.shape[-3]
        a, g = (conv(ffn.dw, conv(ffn.project_in, h, rows), rows) for rows in (slice(hidden), slice(hidden, None)))
    else:
        a, g = conv(ffn.dw, conv(ffn.project_in, h)).chunk(2, dim=1)
    return x + conv(ffn.project_out, F.gelu(a) * g)
