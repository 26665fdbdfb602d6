#!/usr/bin/env python3
"""PyTorch peer for the CUDA backend's benchmarks, run on the same GPU in the same call.

Times, with CUDA events (median of repeats after warm-up), on random data:
  - device-to-device copy of 2 GiB (bytes read + written);
  - bf16 matmul 8192^3 and at the backend benchmark's model shapes;
  - INT4 group-32 weights the way PyTorch users multiply them: unpack the compressed-tensors
    int32 words with shifts and masks, subtract 8, scale by the bf16 group scales, then x @ w.T
    in bf16; and, for reference, the same product with a plain bf16 weight. M = 1 and 8, at the
    Qwen3-30B-A3B expert shapes and 2048x2048, rotating over enough weight copies to exceed L2;
  - sdpa prefill and decode (single and batched sequences, GQA), f32 and bf16;
  - one Qwen3-30B-A3B MoE layer at 1, 8, 64, 256 decode tokens with bf16 experts, looping over the
    hit experts as transformers does.
Usage: peer_ops.py [OUT_DIR]  (writes peer-ops.md there)
"""
import os
import sys
import datetime
import torch

dev = torch.device("cuda")
rows = []


def row(name, figure, against, ratio):
    rows.append(f"| {name} | {figure} | {against} | {ratio:.3f} |")
    print(f"{name:<62} {figure:<20} {against:<26} {ratio:.3f}", flush=True)


def time_ms(fn, reps=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    g = torch.Generator(device=dev)
    g.manual_seed(0)
    name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__} on {name}", flush=True)

    n = 2 << 30
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    src.random_(0, 256, generator=g)
    ms = time_ms(lambda: dst.copy_(src))
    copy = 2.0 * n / (ms * 1e6)
    row("copy d2d 2 GiB (read + write)", f"{copy:.0f} GB/s", "4800 GB/s datasheet", copy / 4800)
    del src, dst

    s = 8192
    a = torch.rand(s, s, device=dev, generator=g, dtype=torch.float32).sub_(0.5).to(torch.bfloat16)
    b = torch.rand(s, s, device=dev, generator=g, dtype=torch.float32).sub_(0.5).to(torch.bfloat16)
    ms = time_ms(lambda: a @ b.T)
    peak = 2.0 * s ** 3 / (ms * 1e9)
    row("torch bf16 matmul 8192^3", f"{peak:.0f} TFLOP/s", "790 TFLOP/s (H200 bf16)", peak / 790)
    del a, b

    for m, nn, k in [(4096, 4096, 2048), (4096, 2048, 4096), (8192, 6144, 2048)]:
        x = torch.rand(m, k, device=dev, generator=g).sub_(0.5)
        w = torch.rand(nn, k, device=dev, generator=g).sub_(0.5).to(torch.bfloat16)
        ms = time_ms(lambda: x.to(torch.bfloat16) @ w.T)
        tf = 2.0 * m * nn * k / (ms * 1e9)
        row(f"torch x.bf16() @ w.T M={m} N={nn} K={k}", f"{tf:.0f} TFLOP/s", f"torch 8192^3 {peak:.0f}", tf / peak)

    shifts = torch.arange(0, 32, 4, device=dev, dtype=torch.int32)
    for nn, k in [(768, 2048), (2048, 768), (2048, 2048), (8192, 8192)]:
        wbytes = nn * k // 2 + nn * k // 32 * 2
        copies = max(8, (256 << 20) // wbytes)
        packed = [torch.randint(-2**31, 2**31 - 1, (nn, k // 8), device=dev, dtype=torch.int32, generator=g) for _ in range(copies)]
        scales = [(torch.rand(nn, k // 32, device=dev, generator=g) * 0.048 + 0.002).to(torch.bfloat16) for _ in range(copies)]
        dense = [torch.rand(nn, k, device=dev, generator=g).sub_(0.5).to(torch.bfloat16) for _ in range(copies)]

        def int4_mm(x, p, sc):
            q = ((p.unsqueeze(-1) >> shifts) & 0xF).reshape(nn, k).to(torch.bfloat16) - 8
            w = (q.view(nn, k // 32, 32) * sc.unsqueeze(-1)).reshape(nn, k)
            return x @ w.T

        for m in (1, 8):
            x = torch.rand(m, k, device=dev, generator=g).sub_(0.5).to(torch.bfloat16)

            def run_int4():
                for p, sc in zip(packed, scales):
                    int4_mm(x, p, sc)

            def run_dense():
                for w in dense:
                    x @ w.T

            per = time_ms(run_int4, reps=5) / copies
            gbs = (wbytes + m * k * 2 + m * nn * 2) / (per * 1e6)
            row(f"torch int4 unpack+dequant+matmul M={m} {nn}x{k} ({per*1e3:.2f} us)", f"{gbs:.0f} GB/s", f"copy {copy:.0f} GB/s", gbs / copy)
            per = time_ms(run_dense, reps=5) / copies
            gbs = (nn * k * 2 + m * k * 2 + m * nn * 2) / (per * 1e6)
            row(f"torch bf16 matmul M={m} {nn}x{k} ({per*1e3:.2f} us)", f"{gbs:.0f} GB/s", f"copy {copy:.0f} GB/s", gbs / copy)
        del packed, scales, dense

    # attention, Qwen3-30B-A3B heads (Hq 32, Hkv 4, D 128): f32 (the backend's dtype) and bf16
    import torch.nn.functional as F
    hq, hkv, d = 32, 4, 128
    for t, s_len in [(2048, 2048), (1, 4096), (1, 32768)]:
        for dt in (torch.float32, torch.bfloat16):
            q = torch.rand(1, hq, t, d, device=dev, generator=g).sub_(0.5).to(dt)
            k = torch.rand(1, hkv, s_len, d, device=dev, generator=g).sub_(0.5).to(dt)
            v = torch.rand(1, hkv, s_len, d, device=dev, generator=g).sub_(0.5).to(dt)
            causal = t > 1
            ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True), reps=5)
            tag = "f32" if dt == torch.float32 else "bf16"
            if t == 1:
                gbs = 2.0 * s_len * hkv * d * q.element_size() / (ms * 1e6)
                row(f"torch sdpa {tag} decode S={s_len} ({ms*1e3:.1f} us)", f"{gbs:.0f} GB/s of K+V", f"copy {copy:.0f} GB/s", gbs / copy)
            else:
                tf = 4.0 * hq * d * (t * (t + 1) / 2) / (ms * 1e9)
                row(f"torch sdpa {tag} prefill T=S={t} ({ms:.2f} ms)", f"{tf:.1f} TFLOP/s", "67 TFLOP/s f32 datasheet", tf / 67)

    # batched decode attention at the decode benchmark's shapes (B sequences of S keys, contiguous caches)
    for b, s_len in [(1, 4096), (64, 1024), (256, 512)]:
        for dt in (torch.float32, torch.bfloat16):
            q = torch.rand(b, hq, 1, d, device=dev, generator=g).sub_(0.5).to(dt)
            k = torch.rand(b, hkv, s_len, d, device=dev, generator=g).sub_(0.5).to(dt)
            v = torch.rand(b, hkv, s_len, d, device=dev, generator=g).sub_(0.5).to(dt)
            ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), reps=5)
            tag = "f32" if dt == torch.float32 else "bf16"
            gbs = 2.0 * b * s_len * hkv * d * q.element_size() / (ms * 1e6)
            row(f"torch sdpa {tag} decode B={b} S={s_len} ({ms*1e3:.1f} us)", f"{gbs:.0f} GB/s of K+V", f"copy {copy:.0f} GB/s", gbs / copy)
            del q, k, v

    # one Qwen3-30B-A3B MoE layer at decode, bf16 experts, the transformers way (a loop over the hit experts)
    e, hidden, inter, topk = 128, 2048, 768, 8
    gate_up = torch.rand(e, 2 * inter, hidden, device=dev, generator=g).sub_(0.5).mul_(0.05).to(torch.bfloat16)
    down_w = torch.rand(e, hidden, inter, device=dev, generator=g).sub_(0.5).mul_(0.05).to(torch.bfloat16)
    for m in (1, 8, 64, 256):
        x = torch.rand(m, hidden, device=dev, generator=g).sub_(0.5).to(torch.bfloat16)
        ids = torch.stack([torch.randperm(e, device=dev, generator=g)[:topk] for _ in range(m)])
        wts = torch.rand(m, topk, device=dev, generator=g)
        hit = torch.unique(ids)

        def moe():
            out = torch.zeros_like(x)
            for ex in hit.tolist():
                tok, slot = torch.where(ids == ex)
                h = x[tok] @ gate_up[ex].T
                a = F.silu(h[:, :inter]) * h[:, inter:]
                out.index_add_(0, tok, (a @ down_w[ex].T) * wts[tok, slot, None].to(x.dtype))
            return out

        ms = time_ms(moe, reps=5)
        nbytes = hit.numel() * 3 * inter * hidden * 2
        gbs = nbytes / (ms * 1e6)
        row(f"torch bf16 MoE layer decode {m} tokens ({hit.numel()} experts, {nbytes/1e6:.0f} MB, {ms*1e3:.0f} us)",
            f"{gbs:.0f} GB/s", f"copy {copy:.0f} GB/s", gbs / copy)
    del gate_up, down_w

    md = f"## PyTorch peer on {name}\n\ntorch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc).isoformat()}\n\n"
    md += "| benchmark | figure | against | ratio |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    print(md)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "peer-ops.md"), "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
