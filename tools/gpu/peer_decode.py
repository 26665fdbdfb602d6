#!/usr/bin/env python3
"""PyTorch + transformers peer of Qwen3DecodeBench: bf16 decode throughput of a randomly
initialised Qwen3-30B-A3B-shaped model on the GPU, with transformers' own generate().

The model is built from the config (config.json given as the second argument, else the published
Qwen3-30B-A3B values) directly on the GPU in bf16, random weights. For each batch size, every
sequence gets a random prompt of CONTEXT tokens; decode time is the difference between generating
1 + N tokens and generating 1 token (both greedy, no early stop), so the prefill cancels.
Prints one JSON object per batch size and writes peer-decode.json into OUT_DIR.

Usage: peer_decode.py [OUT_DIR [CONFIG_JSON [CONTEXT [NEW_TOKENS]]]]
"""
import json
import os
import sys
import time

import torch

QWEN3_30B_A3B = dict(hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                     moe_intermediate_size=768, intermediate_size=6144, num_experts=128, num_experts_per_tok=8,
                     norm_topk_prob=True, vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=40960,
                     tie_word_embeddings=False, decoder_sparse_step=1, mlp_only_layers=[])


def build(config_path):
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig
    if config_path and os.path.isfile(config_path):
        with open(config_path) as f:
            cfg = Qwen3MoeConfig(**{k: v for k, v in json.load(f).items() if k not in ("architectures", "transformers_version")})
    else:
        cfg = Qwen3MoeConfig(**QWEN3_30B_A3B)
    for attr in ("dtype", "torch_dtype"):  # the name changed between transformers 4 and 5
        try:
            setattr(cfg, attr, torch.bfloat16)
        except (AttributeError, TypeError):
            pass
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters are created in bf16 on the GPU, never in f32
    try:
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.to(torch.bfloat16)
    model.eval()
    return model, cfg


def generate_s(model, prompt, new_tokens):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0, eos_token_id=None)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    config = sys.argv[2] if len(sys.argv) > 2 else None
    context = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    new = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    batches = [int(b) for b in os.environ.get("ORBIT_PEER_BATCHES", "1,8,64,256").split(",")]
    import transformers
    model, cfg = build(config)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(0),
                      "params": params, "context": context, "new_tokens": new}), flush=True)
    results = []
    for batch in batches:
        g = torch.Generator(device="cuda").manual_seed(batch)
        prompt = torch.randint(0, cfg.vocab_size, (batch, context), device="cuda", generator=g)
        try:
            generate_s(model, prompt, 2)  # warm-up
            t1 = generate_s(model, prompt, 1)
            tn = generate_s(model, prompt, 1 + new)
            decode = max(tn - t1, 1e-9)
            r = {"batch": batch, "decode_tokens_per_s": batch * new / decode, "step_ms": 1e3 * decode / new,
                 "prefill_plus_one_s": t1}
        except torch.cuda.OutOfMemoryError as e:
            r = {"batch": batch, "error": "out of memory: " + str(e).splitlines()[0]}
            torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
        results.append(r)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "peer-decode.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
