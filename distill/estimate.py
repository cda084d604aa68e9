"""Per-GPU memory of a ZeRO-3 training run, from the model's shapes alone: no weights, no GPU, no download.

Every figure is per GPU, in bytes, for one micro-batch of `seq_len`-token sequences:

- model states (parameters, gradients, optimizer states): DeepSpeed's own ZeRO-3 estimator
  (`estimate_zero3_model_states_mem_needs`, the function behind `..._all_cold`), for three layouts:
  nothing offloaded, the optimizer offloaded to CPU, optimizer and parameters offloaded.
  (`..._all_live` is not used: it counts parameters by data_ptr(), which is 0 for every meta tensor.)
- loss head: the fused-linear KL loss (`distill.losses.fused_linear`) holds one chunk of
  `default_chunk_rows(V)` rows x V float32 logits, overwritten in place by their gradient, plus that
  chunk's bf16 copy as a GEMM operand; and, from its forward to its backward, the output matrix's
  float32 gradient (V x H) and its bf16 cast handed back to ZeRO.
- activations: measured, not guessed. One decoder layer (and the final norm) runs its forward on the
  meta device under a saved-tensors hook that adds up the bytes autograd keeps for the backward,
  parameters excluded (ZeRO-3 counts those). With Gemma-2's eager attention (the only one it has in
  transformers: softcapping) that includes its (heads x seq x seq) probabilities, which dominate at 4k.
  Two activation models from that, per sequence:
    checkpointed: layers x seq x hidden x 2 B (each layer's bf16 input) + 2 x one layer's saved bytes
                  (the layer recomputed in the backward, and as much again assumed for its gradients in
                  flight) + final norm + loss-head rows
    full (no checkpointing, what the engine does today): (layers + 1) x one layer's saved bytes + final
                  norm + loss-head rows
- batch tensors: int64 input ids, labels and attention mask; a cache-reading run instead holds what the
  cache reader decodes (`distill.cache.codec`): int64 input ids and mask, top-k int64 ids and float32
  log-probs, a float32 log-sum-exp, i.e. 20 + 12 k bytes per token.

The largest micro-batch is floor((usable - fixed) / per-sequence) with usable = GPU memory less a 10%
reserve. It is an estimate: the figures add peaks that do not all coincide (conservative), and ignore
the CUDA allocator's fragmentation beyond that reserve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.errors import UserError
from distill.losses.chunked import default_chunk_rows
from distill.models import PRESETS, build_meta_model, count_parameters, model_config

GIB = 2**30
RESERVE = 0.10  # of GPU memory kept back: CUDA context, NCCL buffers, allocator fragmentation
LAYOUTS = {  # name -> (offload optimizer, offload params), as DeepSpeed's estimator takes them
    "zero3": (False, False),
    "offload_optimizer": (True, False),
    "offload_all": (True, True),
}
STUDENT_BATCH_BYTES = 3 * 8  # per token: int64 input_ids, labels, attention_mask
CACHE_BATCH_BYTES = 2 * 8 + 4  # per token: int64 input_ids and attention_mask, float32 logsumexp
CACHE_ENTRY_BYTES = 8 + 4  # per top-k entry: int64 id and float32 log-prob, as the cache reader decodes them
ACTIVATION_MODEL = ("per sequence, measured on the meta device: checkpointed = layers x seq x hidden x 2 B + "
                    "2 x one layer's saved tensors; full = (layers + 1) x one layer's saved tensors; both plus "
                    "the final norm and the loss head's rows (bf16 hidden, float32 gradient)")


@dataclass(frozen=True)
class Profile:
    """What the estimate needs of a model, traced once on the meta device."""

    name: str
    params: int  # tied embedding counted once
    largest_layer_params: int  # the largest module's own parameters (Gemma: the embedding, V x H)
    layers: int
    hidden: int
    vocab: int
    seq_len: int
    layer_saved: int  # bytes autograd keeps for one decoder layer, one sequence
    norm_saved: int  # bytes autograd keeps for the final norm, one sequence


def check_args(preset: str, nodes: int, gpus_per_node: int, gpu_mem_gib: float, seq_len: int, topk: int,
               tokenizer=None) -> None:
    """Refuse bad input with one line naming the option and its value."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: unknown preset, expected one of {', '.join(PRESETS)}")
    for flag, value in (("--nodes", nodes), ("--gpus-per-node", gpus_per_node), ("--seq-len", seq_len),
                        ("--topk", topk)):
        if value < 1:
            raise UserError(f"{flag} {value}: expected a positive whole number")
    if not gpu_mem_gib > 0:
        raise UserError(f"--gpu-mem-gb {gpu_mem_gib}: expected a positive number of GiB")
    config = model_config(preset, tokenizer)
    if seq_len > config.max_position_embeddings:
        raise UserError(f"--seq-len {seq_len}: {preset} has {config.max_position_embeddings} positions")
    if topk > config.vocab_size:
        raise UserError(f"--topk {topk}: {preset} has a vocabulary of {config.vocab_size}")


def largest_layer_params(model) -> int:
    # DeepSpeed's definition (model_to_params): a module's own parameters, not its children's.
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def saved_bytes(fn, params) -> int:
    """Bytes of the tensors autograd saves while fn() runs, each storage once, parameters left out."""
    skip = {p.untyped_storage()._cdata for p in params}  # _cdata: the storage's identity, meta ones included
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def trace_activations(model, seq_len: int) -> tuple[int, int]:
    """(one decoder layer's, the final norm's) saved bytes for one sequence, traced on the meta device.
    The last layer: Gemma-2 alternates sliding and full attention, and eager attention holds the whole
    seq x seq scores either way."""
    inner = model.model
    model.train()
    x = torch.empty(1, seq_len, model.config.hidden_size, device="meta", dtype=model.dtype, requires_grad=True)
    pos = torch.arange(seq_len, device="meta")[None]
    rope = inner.rotary_emb(x, pos)
    layer = inner.layers[-1]
    per_layer = saved_bytes(lambda: layer(x, position_embeddings=rope, attention_mask=None, position_ids=pos),
                            layer.parameters())
    return per_layer, saved_bytes(lambda: inner.norm(x), inner.norm.parameters())


def profile(preset: str, seq_len: int, tokenizer=None) -> Profile:
    model = build_meta_model(preset, tokenizer)
    layer_saved, norm_saved = trace_activations(model, seq_len)
    c = model.config
    return Profile(preset, count_parameters(model), largest_layer_params(model), c.num_hidden_layers,
                   c.hidden_size, c.vocab_size, seq_len, layer_saved, norm_saved)


def model_states(p: Profile, nodes: int, gpus_per_node: int) -> dict[str, dict[str, int]]:
    """DeepSpeed's ZeRO-3 estimate per layout: bytes per GPU and per node's CPU (zero.Init builds)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    out = {}
    for name, (offload_optimizer, offload_params) in LAYOUTS.items():
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            p.params, p.largest_layer_params, num_gpus_per_node=gpus_per_node, num_nodes=nodes,
            cpu_offload=offload_optimizer, cpu_offload_params=offload_params, zero_init=True)
        out[name] = {"gpu": gpu, "cpu_per_node": cpu}
    return out


def loss_head_fixed(p: Profile, topk: int | None) -> dict[str, int]:
    """The loss head's memory that does not grow with the micro-batch."""
    rows = default_chunk_rows(p.vocab)
    chunk = rows * p.vocab * (4 + 2)  # float32 logits -> gradient in place, and its bf16 GEMM operand
    if topk:
        chunk += rows * topk * CACHE_ENTRY_BYTES  # the chunk's targets, should a kernel copy them
    return {"chunk_rows": rows, "chunk": chunk, "output_grad": p.vocab * p.hidden * (4 + 2)}


def per_sequence(p: Profile, topk: int) -> dict[str, int]:
    s = p.seq_len
    shared = p.norm_saved + s * p.hidden * (2 + 4) + s * 4  # final norm; head: bf16 hidden, fp32 grad, row losses
    return {
        "activations_checkpointed": p.layers * s * p.hidden * 2 + 2 * p.layer_saved + shared,
        "activations_full": (p.layers + 1) * p.layer_saved + shared,
        "student_batch": s * STUDENT_BATCH_BYTES,
        "cache_batch": s * (CACHE_BATCH_BYTES + topk * CACHE_ENTRY_BYTES),
        # Reported only: a head that materialises the logits (transformers' own) holds per sequence its
        # bf16 logits, the softcap's saved tanh and a bf16 gradient buffer, instead of one chunk.
        "materialised_logits": s * p.vocab * 6,
    }


def max_micro_batch(usable: int, fixed: int, per_seq: int) -> int:
    return max(0, (usable - fixed) // per_seq)


def fits(usable: int, states: int, head: dict, seq: dict, batch_key: str) -> dict[str, int]:
    fixed = states + head["chunk"] + head["output_grad"]
    return {mode: max_micro_batch(usable, fixed, seq[f"activations_{mode}"] + seq[batch_key])
            for mode in ("checkpointed", "full")}


def estimate(p: Profile, nodes: int, gpus_per_node: int, gpu_mem_gib: float, topk: int) -> dict:
    """Every figure of the estimate, in bytes (JSON-ready)."""
    usable = int(gpu_mem_gib * GIB * (1 - RESERVE))
    heads = {"student": loss_head_fixed(p, None), "cache": loss_head_fixed(p, topk)}
    seq = per_sequence(p, topk)
    layouts = {}
    for name, st in model_states(p, nodes, gpus_per_node).items():
        layouts[name] = {**st, "micro_batch": {
            "student": fits(usable, st["gpu"], heads["student"], seq, "student_batch"),
            "cache": fits(usable, st["gpu"], heads["cache"], seq, "cache_batch")}}
    return {"preset": p.name, "params": p.params, "largest_layer_params": p.largest_layer_params,
            "nodes": nodes, "gpus_per_node": gpus_per_node, "gpu_mem_gib": gpu_mem_gib, "reserve": RESERVE,
            "usable_bytes": usable, "seq_len": p.seq_len, "topk": topk, "layer_saved_bytes": p.layer_saved,
            "loss_head_bytes": heads, "per_sequence_bytes": seq, "layouts": layouts,
            "activation_model": ACTIVATION_MODEL}


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def _row(label: str, cells) -> str:
    return f"  {label:<50}" + "".join(f"{c:>19}" for c in cells)


def _layout_table(e: dict) -> list[str]:
    names, heads = list(LAYOUTS), e["loss_head_bytes"]
    return [
        _row("Per GPU, ZeRO-3 layout", names),
        _row("model states (DeepSpeed's estimator)", [_size(e["layouts"][n]["gpu"]) for n in names]),
        _row("  CPU memory per node", [_size(e["layouts"][n]["cpu_per_node"]) for n in names]),
        _row(f"loss chunk ({heads['student']['chunk_rows']} rows x V x (4+2) B)",
             [_size(heads["student"]["chunk"])] * 3),
        _row("  with the cache's top-k targets of the chunk", [_size(heads["cache"]["chunk"])] * 3),
        _row("output-matrix gradient (V x H x (4+2) B)", [_size(heads["student"]["output_grad"])] * 3),
    ]


def _sequence_table(e: dict) -> list[str]:
    seq = e["per_sequence_bytes"]
    return [
        f"  Per sequence of {e['seq_len']} tokens (one decoder layer saves {_size(e['layer_saved_bytes'])})",
        _row("activations, checkpointing every layer", [_size(seq["activations_checkpointed"])]),
        _row("activations, no checkpointing", [_size(seq["activations_full"])]),
        _row("student batch tensors", [_size(seq["student_batch"])]),
        _row(f"cache-reading batch (top-{e['topk']} targets included)", [_size(seq["cache_batch"])]),
        _row("not counted: logits if materialised (seq x V x 6 B)", [_size(seq["materialised_logits"])]),
    ]


def _fit_table(e: dict) -> list[str]:
    names = list(LAYOUTS)
    lines = [_row("Largest micro-batch (sequences per GPU)", names)]
    for run in ("student", "cache"):
        for mode, label in (("checkpointed", "checkpointing every layer"), ("full", "no checkpointing")):
            lines.append(_row(f"{run} run, {label}", [e["layouts"][n]["micro_batch"][run][mode] for n in names]))
    return lines


def format_table(e: dict) -> str:
    """The estimate as a readable table (GiB = 2^30 bytes, MiB = 2^20)."""
    title = (f"{e['preset']}: {e['params'] / 1e9:.3g}B parameters "
             f"(largest layer {e['largest_layer_params'] / 1e9:.3g}B), "
             f"{e['nodes']} node(s) x {e['gpus_per_node']} GPUs of {e['gpu_mem_gib']:g} GiB "
             f"({e['usable_bytes'] / GIB:.1f} GiB usable, {e['reserve']:.0%} reserved), seq {e['seq_len']}, "
             f"top-{e['topk']}")
    notes = [f"Activation model: {e['activation_model']}.",
             "An estimate: peaks are added as if simultaneous; the loss figures assume the fused-linear head."]
    return "\n\n".join(["\n".join(part) for part in
                         ([title], _layout_table(e), _sequence_table(e), _fit_table(e), notes)])
