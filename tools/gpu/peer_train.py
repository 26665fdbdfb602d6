#!/usr/bin/env python3
"""PyTorch + transformers + peft peer of Qwen3TrainBench: LoRA training throughput and peak memory of
a randomly initialised Qwen3-30B-A3B-shaped model on the GPU, bf16 base.

The model is built from the config (second argument, else the published Qwen3-30B-A3B values)
directly on the GPU in bf16 (peer_decode.build). LoRA r=32, alpha 64 on q/k/v/o_proj and, as peft's
target_parameters, on the fused expert tensors transformers 5 keeps per layer
(mlp.experts.gate_up_proj [E, 2I, H] and mlp.experts.down_proj [E, H, I]). One step: forward with
labels (next-token cross-entropy), backward, torch.optim.AdamW on the adapter. For each shape
(sequences x tokens, random token ids): one warm-up step and STEPS timed steps; tokens/s and
torch.cuda.max_memory_allocated; an out-of-memory is recorded and the next shape is tried.
PEER_GRAD_CKPT=1 turns on gradient checkpointing (off by default, as a plain peft script runs).
Prints one JSON object per shape and writes peer-train.json into OUT_DIR.

Usage: peer_train.py [OUT_DIR [CONFIG_JSON [SHAPES [STEPS]]]]     SHAPES like 1x512,2x1024
"""
import json
import os
import sys
import time

import torch

from peer_decode import build


def lora(model):
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, bias="none",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    return get_peft_model(model, cfg)


def run_shape(model, opt, vocab, batch, seq, steps):
    g = torch.Generator(device="cuda").manual_seed(batch * 31 + seq)
    ids = torch.randint(0, vocab, (batch, seq), device="cuda", generator=g)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    loss = None
    t0 = None
    for i in range(steps + 1):
        if i == 1:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids, use_cache=False)
        loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del out
    torch.cuda.synchronize()
    s = (time.perf_counter() - t0) / steps
    return dict(batch=batch, seq=seq, tokens=batch * seq, step_s=s, tokens_per_s=batch * seq / s, loss=float(loss),
                peak_bytes=torch.cuda.max_memory_allocated(), oom=False)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    config = sys.argv[2] if len(sys.argv) > 2 else None
    shapes = [tuple(int(x) for x in s.split("x")) for s in (sys.argv[3] if len(sys.argv) > 3 else "1x512,2x1024").split(",")]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    import peft
    import transformers
    t0 = time.perf_counter()
    model, cfg = build(config)
    model.train()
    ckpt = os.environ.get("PEER_GRAD_CKPT", "0") == "1"
    if ckpt:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = lora(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    report = dict(device=torch.cuda.get_device_name(0),
                  versions=dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__),
                  layers=cfg.num_hidden_layers, gradient_checkpointing=ckpt, build_s=time.perf_counter() - t0,
                  adapter_params=sum(p.numel() for p in trainable),
                  adapter_dtypes=sorted({str(p.dtype) for p in trainable}), results=[])
    print(json.dumps({k: v for k, v in report.items() if k != "results"}), flush=True)
    for batch, seq in shapes:
        try:
            r = run_shape(model, opt, cfg.vocab_size, batch, seq, steps)
        except torch.cuda.OutOfMemoryError as e:
            r = dict(batch=batch, seq=seq, tokens=batch * seq, oom=True, error=str(e).splitlines()[0],
                     peak_bytes=torch.cuda.max_memory_allocated())
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
        report["results"].append(r)
        if out:  # written after every shape, so a timeout keeps what finished
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "peer-train.json"), "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
